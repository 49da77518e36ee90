//! Request bytes -> typed request, with errors that name the field at fault.

use serde::Deserialize;

use crate::server::error::ApiError;

/// The body as text; invalid UTF-8 is refused with the offset of the first bad byte.
pub fn body_text(body: &[u8]) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(format!("the request body is not valid UTF-8 (first bad byte at offset {})", e.valid_up_to()))
    })
}

/// Reads `T` from JSON text. Malformed JSON and wrong types or missing fields are told apart,
/// and the latter name the field (`messages[1].content`).
pub fn read_json<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        describe(inner, (path != ".").then_some(path))
    })?;
    de.end().map_err(|e| describe(e, None))?;
    Ok(value)
}

fn describe(e: serde_json::Error, path: Option<String>) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        }
        Category::Data => match path {
            Some(path) => ApiError::invalid_param(path.clone(), format!("invalid request field `{path}`: {e}")),
            None => ApiError::bad_request(format!("invalid request: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::openai::request::SharedFields;
    use crate::tokenizer::ChatRequest;

    #[test]
    fn malformed_json_and_wrong_types_are_told_apart() {
        let e = read_json::<SharedFields>(r#"{"model": "m", "temperature": }"#).unwrap_err();
        assert!(e.message.starts_with("the request body is not valid JSON"), "{e}");
        let e = read_json::<SharedFields>(r#"{"model": "m", "temperature": "hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"), "{e}");
        assert!(e.message.contains("invalid type: string \"hot\""), "{e}");
        let e = read_json::<SharedFields>(r#"{"temperature": 1}"#).unwrap_err();
        assert!(e.message.contains("missing field `model`"), "{e}");
        let e = read_json::<SharedFields>(r#"{"model": "m"} trailing"#).unwrap_err();
        assert!(e.message.starts_with("the request body is not valid JSON"), "{e}");
        assert!(body_text(b"{\"model\": \"\xff\"}").unwrap_err().message.contains("offset 11"));
    }

    #[test]
    fn the_conversation_keeps_exact_json_and_names_bad_fields() {
        let text = r#"{"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": 1.0}}}]}"#;
        let chat: ChatRequest = read_json(text).unwrap();
        let params = chat.tools.unwrap()[0].function.parameters.clone().unwrap();
        assert_eq!(params.dumps(), r#"{"b": 1, "a": 1.0}"#);
        let e = read_json::<ChatRequest>(r#"{"messages": [{"role": "user", "content": 5}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content"), "{e}");
    }
}
