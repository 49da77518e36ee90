//! The fixed vocabulary of the GGUF format: magic, versions, metadata value types, ggml tensor
//! types and their block sizes (as in ggml's `type_traits` and the `gguf` Python package).
//!
//! File layout (little-endian):
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count x  (key: string, value_type: u32, value)
//! tensor_count x (name: string, n_dims: u32, ne[n_dims]: u64, ggml_type: u32, offset: u64)
//! padding to `general.alignment` (default 32)
//! data section: tensor i at data_start + offset_i (offsets are multiples of the alignment)
//! string = len u64 + UTF-8 bytes (no NUL); array = elem_type u32 + len u64 + elements
//! ```

pub const MAGIC: [u8; 4] = *b"GGUF";
/// Versions 2 and 3 share the layout (u64 counts); version 1 used u32 counts.
pub const SUPPORTED_VERSIONS: [u32; 2] = [2, 3];
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;
/// Arrays of arrays are legal; deeper than this is taken as hostile (it bounds recursion).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Type tag of a metadata value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        self as u32
    }

    /// Fewest bytes one value of this type takes in the file: bounds array lengths before any
    /// allocation (a string is at least its u64 length, an array its type and length).
    pub fn min_encoded_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A ggml tensor type: id, name, and how many elements fit in how many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    /// Elements per block (1 for plain floats and ints).
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
}

macro_rules! ggml_types {
    ($($konst:ident = $id:literal, $name:literal, $block:literal, $size:literal;)*) => {
        impl GgmlType {
            $(pub const $konst: GgmlType =
                GgmlType { id: $id, name: $name, block_size: $block, type_size: $size };)*
            const ALL: &'static [GgmlType] = &[$(GgmlType::$konst),*];
        }
    };
}

// Every storage type ggml knows, so that an unsupported one is refused by name at
// dequantisation rather than as "unknown". Q8_1 is missing on purpose: it is a compute-only
// type whose block size changed between ggml versions; no file stores it.
ggml_types! {
    F32 = 0, "F32", 1, 4;
    F16 = 1, "F16", 1, 2;
    Q4_0 = 2, "Q4_0", 32, 18;
    Q4_1 = 3, "Q4_1", 32, 20;
    Q5_0 = 6, "Q5_0", 32, 22;
    Q5_1 = 7, "Q5_1", 32, 24;
    Q8_0 = 8, "Q8_0", 32, 34;
    Q2_K = 10, "Q2_K", 256, 84;
    Q3_K = 11, "Q3_K", 256, 110;
    Q4_K = 12, "Q4_K", 256, 144;
    Q5_K = 13, "Q5_K", 256, 176;
    Q6_K = 14, "Q6_K", 256, 210;
    Q8_K = 15, "Q8_K", 256, 292;
    IQ2_XXS = 16, "IQ2_XXS", 256, 66;
    IQ2_XS = 17, "IQ2_XS", 256, 74;
    IQ3_XXS = 18, "IQ3_XXS", 256, 98;
    IQ1_S = 19, "IQ1_S", 256, 50;
    IQ4_NL = 20, "IQ4_NL", 32, 18;
    IQ3_S = 21, "IQ3_S", 256, 110;
    IQ2_S = 22, "IQ2_S", 256, 82;
    IQ4_XS = 23, "IQ4_XS", 256, 136;
    I8 = 24, "I8", 1, 1;
    I16 = 25, "I16", 1, 2;
    I32 = 26, "I32", 1, 4;
    I64 = 27, "I64", 1, 8;
    F64 = 28, "F64", 1, 8;
    IQ1_M = 29, "IQ1_M", 256, 56;
    BF16 = 30, "BF16", 1, 2;
    TQ1_0 = 34, "TQ1_0", 256, 54;
    TQ2_0 = 35, "TQ2_0", 256, 66;
    MXFP4 = 39, "MXFP4", 32, 17;
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|t| t.id == id)
    }

    /// Bytes taken by `n_elements` (a multiple of the block size); `None` on overflow.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        (n_elements / self.block_size).checked_mul(self.type_size)
    }
}

/// Round `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_tables_round_trip() {
        for id in 0..13 {
            assert_eq!(ValueType::from_id(id).unwrap().id(), id);
        }
        assert_eq!(ValueType::from_id(13), None);
        assert_eq!(GgmlType::from_id(3), Some(GgmlType::Q4_1));
        assert_eq!(GgmlType::from_id(9), None, "Q8_1 is not a storage type");
        assert_eq!(
            GgmlType::from_id(4),
            None,
            "ids 4 and 5 were removed from ggml"
        );
        assert_eq!(GgmlType::Q8_0.bytes_for(64), Some(68));
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
    }

    #[test]
    fn align_up_rounds_to_the_next_multiple() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX - 3, 32), None);
    }
}
