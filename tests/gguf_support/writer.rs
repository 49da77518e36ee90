//! A small GGUF writer for tests: builds valid files, and hostile ones through overrides
//! (counts, offsets, types, raw bytes) that a real writer would never produce.

#![allow(dead_code)]

/// A metadata value as written: type id + encoded bytes.
#[derive(Clone, Debug)]
pub enum W {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    /// Element type id and elements (all of that type).
    Arr(u32, Vec<W>),
    /// Anything: a type id and the bytes that follow it.
    Raw(u32, Vec<u8>),
}

pub fn s(x: &str) -> W {
    W::Str(x.into())
}

pub fn str_arr<S: AsRef<str>>(xs: &[S]) -> W {
    W::Arr(8, xs.iter().map(|x| s(x.as_ref())).collect())
}

impl W {
    pub fn type_id(&self) -> u32 {
        match self {
            W::U8(_) => 0,
            W::I8(_) => 1,
            W::U16(_) => 2,
            W::I16(_) => 3,
            W::U32(_) => 4,
            W::I32(_) => 5,
            W::F32(_) => 6,
            W::Bool(_) => 7,
            W::Str(_) => 8,
            W::Arr(..) => 9,
            W::U64(_) => 10,
            W::I64(_) => 11,
            W::F64(_) => 12,
            W::Raw(t, _) => *t,
        }
    }

    /// The value's bytes, without its type id.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            W::U8(v) => out.extend(v.to_le_bytes()),
            W::I8(v) => out.extend(v.to_le_bytes()),
            W::U16(v) => out.extend(v.to_le_bytes()),
            W::I16(v) => out.extend(v.to_le_bytes()),
            W::U32(v) => out.extend(v.to_le_bytes()),
            W::I32(v) => out.extend(v.to_le_bytes()),
            W::U64(v) => out.extend(v.to_le_bytes()),
            W::I64(v) => out.extend(v.to_le_bytes()),
            W::F32(v) => out.extend(v.to_le_bytes()),
            W::F64(v) => out.extend(v.to_le_bytes()),
            W::Bool(v) => out.push(*v as u8),
            W::Str(v) => put_str(out, v),
            W::Arr(t, items) => {
                out.extend(t.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.encode(out);
                }
            }
            W::Raw(_, bytes) => out.extend(bytes),
        }
    }
}

pub fn put_str(out: &mut Vec<u8>, v: &str) {
    out.extend((v.len() as u64).to_le_bytes());
    out.extend(v.as_bytes());
}

#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    /// GGUF order, innermost first.
    pub ne: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
    /// Offset in the data section; `None` = placed after the previous tensor, aligned.
    pub offset: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct GgufWriter {
    pub magic: [u8; 4],
    pub version: u32,
    pub kv: Vec<(String, W)>,
    pub tensors: Vec<TensorSpec>,
    pub alignment: u64,
    pub tensor_count: Option<u64>,
    pub kv_count: Option<u64>,
    /// Cut the finished file to this many bytes.
    pub truncate_to: Option<usize>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter {
            magic: *b"GGUF",
            version: 3,
            kv: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
            tensor_count: None,
            kv_count: None,
            truncate_to: None,
        }
    }
}

impl GgufWriter {
    pub fn kv(mut self, key: &str, value: W) -> Self {
        self.kv.push((key.into(), value));
        self
    }

    pub fn tensor(mut self, name: &str, ne: &[u64], type_id: u32, data: Vec<u8>) -> Self {
        self.tensors.push(TensorSpec {
            name: name.into(),
            ne: ne.to_vec(),
            type_id,
            data,
            offset: None,
        });
        self
    }

    /// f32 tensor from values (GGUF order: `ne[0]` is the row length).
    pub fn f32_tensor(self, name: &str, ne: &[u64], values: &[f32]) -> Self {
        assert_eq!(ne.iter().product::<u64>() as usize, values.len(), "{name}");
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, ne, 0, data)
    }

    /// The offsets each tensor gets in the data section.
    pub fn offsets(&self) -> Vec<u64> {
        let mut next = 0u64;
        self.tensors
            .iter()
            .map(|t| {
                let off = t.offset.unwrap_or(next);
                next = align(off + t.data.len() as u64, self.alignment);
                off
            })
            .collect()
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(self.magic);
        out.extend(self.version.to_le_bytes());
        out.extend(
            self.tensor_count
                .unwrap_or(self.tensors.len() as u64)
                .to_le_bytes(),
        );
        out.extend(self.kv_count.unwrap_or(self.kv.len() as u64).to_le_bytes());
        for (key, value) in &self.kv {
            put_str(&mut out, key);
            out.extend(value.type_id().to_le_bytes());
            value.encode(&mut out);
        }
        let offsets = self.offsets();
        for (t, off) in self.tensors.iter().zip(&offsets) {
            put_str(&mut out, &t.name);
            out.extend((t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.type_id.to_le_bytes());
            out.extend(off.to_le_bytes());
        }
        let data_start = align(out.len() as u64, self.alignment) as usize;
        out.resize(data_start, 0);
        for (t, off) in self
            .tensors
            .iter()
            .zip(&offsets)
            .filter(|(t, _)| !t.data.is_empty())
        {
            let at = data_start + *off as usize;
            if out.len() < at + t.data.len() {
                out.resize(at + t.data.len(), 0);
            }
            out[at..at + t.data.len()].copy_from_slice(&t.data);
        }
        if let Some(n) = self.truncate_to {
            out.truncate(n);
        }
        out
    }
}

pub fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}
