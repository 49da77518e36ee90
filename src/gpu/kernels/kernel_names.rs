//! The names an attention kernel of the decode and prefill tables goes by (decode_table.rs,
//! prefill_table.rs).

/// A kernel's name for users, its module, and its PTX entry prefixes per cache dtype.
#[derive(Debug)]
pub struct KernelNames {
    /// Its name in the kernel lab (`--variant`) and for the NEMO_*_ATTENTION variables; over an
    /// FP8 cache the lab names it `<name>-e4m3`.
    pub name: &'static str,
    /// Its kernels/*.cu file's stem.
    pub module: &'static str,
    /// Entry prefix over a bf16 cache.
    pub bf16: &'static str,
    /// Entry prefix over an FP8 e4m3 cache (AttentionParams::k_scales, v_scales set), if it has one.
    pub e4m3: Option<&'static str>,
}

impl KernelNames {
    /// Its entry prefix over a bf16 or an FP8 cache (None if it has no FP8 entries).
    pub fn entry_prefix(&self, e4m3: bool) -> Option<&'static str> {
        if e4m3 {
            self.e4m3
        } else {
            Some(self.bf16)
        }
    }

    /// Its name in errors: the entry prefix, or its module where it has none over that cache.
    pub fn label(&self, e4m3: bool) -> &'static str {
        self.entry_prefix(e4m3).unwrap_or(self.module)
    }
}
