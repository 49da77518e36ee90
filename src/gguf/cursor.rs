//! A bounds-checked little-endian reader over the file's bytes. Every read states the field it is
//! reading (built lazily, only on error), so a truncated or hostile file is refused by name.
//! Nothing here allocates more than the bytes it has already checked are present.

use std::path::Path;

use super::error::{GgufError, GgufErrorKind};
use super::header::{ValueType, MAX_ARRAY_DEPTH};
use super::value::{Array, Value};

/// The name of the field being read, for error messages; formatted only when something fails.
pub type Field<'f> = &'f dyn Fn() -> String;

pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8], path: &'a Path) -> Self {
        Cursor {
            bytes,
            pos: 0,
            path,
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos as u64
    }

    pub fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    pub fn error(&self, kind: GgufErrorKind) -> GgufError {
        GgufError::new(self.path, kind)
    }

    pub fn take(&mut self, n: u64, field: Field) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(self.error(GgufErrorKind::Truncated {
                field: field(),
                offset: self.pos(),
                needed: n,
                file_len: self.bytes.len() as u64,
            }));
        }
        let start = self.pos;
        self.pos += n as usize; // n <= remaining, so it fits in usize
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], GgufError> {
        Ok(self
            .take(N as u64, field)?
            .try_into()
            .expect("take returned N bytes"))
    }

    pub fn u32(&mut self, field: Field) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: Field) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A count that announces `count` items of at least `min_item_size` bytes each: refused if
    /// the rest of the file cannot hold them, before anything is allocated for them.
    pub fn check_count(
        &self,
        count: u64,
        min_item_size: u64,
        field: Field,
    ) -> Result<(), GgufError> {
        let max = self.remaining() / min_item_size;
        if count > max {
            return Err(self.error(GgufErrorKind::AbsurdCount {
                field: field(),
                count,
                max,
            }));
        }
        Ok(())
    }

    pub fn string(&mut self, field: Field) -> Result<String, GgufError> {
        let len = self.u64(&|| format!("{} (string length)", field()))?;
        let bytes = self.take(len, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(self.error(GgufErrorKind::InvalidUtf8 { field: field() })),
        }
    }

    pub fn value_type(&mut self, field: Field) -> Result<ValueType, GgufError> {
        let type_id = self.u32(&|| format!("{} (value type)", field()))?;
        ValueType::from_id(type_id).ok_or_else(|| {
            self.error(GgufErrorKind::UnknownValueType {
                field: field(),
                type_id,
            })
        })
    }

    pub fn value(&mut self, ty: ValueType, field: Field) -> Result<Value, GgufError> {
        self.value_at_depth(ty, 0, field)
    }

    fn value_at_depth(
        &mut self,
        ty: ValueType,
        depth: usize,
        field: Field,
    ) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.array(field)?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(field)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(field)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(field)?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.array(field)?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(field)?)),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.array(field)?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(field)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(field)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(field)?)),
            ValueType::Bool => Value::Bool(self.bool(field)?),
            ValueType::String => Value::String(self.string(field)?),
            ValueType::Array => Value::Array(self.array_value(depth, field)?),
        })
    }

    fn bool(&mut self, field: Field) -> Result<bool, GgufError> {
        match self.take(1, field)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(self.error(GgufErrorKind::InvalidBool {
                field: field(),
                value,
            })),
        }
    }

    /// elem_type u32, len u64, then `len` elements.
    fn array_value(&mut self, depth: usize, field: Field) -> Result<Array, GgufError> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.error(GgufErrorKind::NestingTooDeep {
                field: field(),
                max_depth: MAX_ARRAY_DEPTH,
            }));
        }
        let elem = self.value_type(&|| format!("{} (array element type)", field()))?;
        let len_field = || format!("{} (array length)", field());
        let len = self.u64(&len_field)?;
        self.check_count(len, elem.min_encoded_size(), &len_field)?;
        let elem_field = |i: u64| move || format!("{}[{i}]", field());

        // Fixed-size elements: one bounds check for the whole run, then a plain decode.
        macro_rules! fixed {
            ($variant:ident, $t:ty) => {{
                let raw = self.take(len * std::mem::size_of::<$t>() as u64, field)?;
                Array::$variant(
                    raw.chunks_exact(std::mem::size_of::<$t>())
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")))
                        .collect(),
                )
            }};
        }
        // Variable-size elements grow as they are read: memory follows the bytes present, not
        // the announced length.
        Ok(match elem {
            ValueType::U8 => Array::U8(self.take(len, field)?.to_vec()),
            ValueType::I8 => fixed!(I8, i8),
            ValueType::U16 => fixed!(U16, u16),
            ValueType::I16 => fixed!(I16, i16),
            ValueType::U32 => fixed!(U32, u32),
            ValueType::I32 => fixed!(I32, i32),
            ValueType::U64 => fixed!(U64, u64),
            ValueType::I64 => fixed!(I64, i64),
            ValueType::F32 => fixed!(F32, f32),
            ValueType::F64 => fixed!(F64, f64),
            ValueType::Bool => {
                let mut v = Vec::new();
                for i in 0..len {
                    v.push(self.bool(&elem_field(i))?);
                }
                Array::Bool(v)
            }
            ValueType::String => {
                let mut v = Vec::new();
                for i in 0..len {
                    v.push(self.string(&elem_field(i))?);
                }
                Array::String(v)
            }
            ValueType::Array => {
                let mut v = Vec::new();
                for i in 0..len {
                    v.push(self.array_value(depth + 1, &elem_field(i))?);
                }
                Array::Array(v)
            }
        })
    }
}
