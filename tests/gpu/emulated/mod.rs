//! The kernels on the CPU emulator (kernels/emu/): each kernel file compiled with g++ into a
//! shared library whose kernels run every GPU thread as a fiber. These tests run everywhere (no
//! GPU needed) against the same CPU references as the GPU tests, with the same cases where the
//! emulator's speed allows; they check indexing, fragment layouts, barriers, epilogues and
//! races on shared memory (kernels/emu/race.cpp), not speed (kernels/emu/emu.h lists what the
//! emulator cannot show).
//!
//! The emulator's own fragment layouts (mma, ldmatrix) are checked by running the kernels that
//! already passed on an H100 (attention_prefill, gemm) through it: a wrong layout there fails.

mod attention;
mod embedding;
mod gemm;
mod gemm_wgmma;
mod rmsnorm;
mod rope;
mod sampling;
mod selftest;

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use cudarc::driver::LaunchConfig;

/// One kernel file built for the emulator.
pub struct Emulated {
    lib: libloading::Library,
    file: String,
}

type LaunchFn = unsafe extern "C" fn(
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    usize,
    extern "C" fn(*mut c_void),
    *mut c_void,
) -> i32;

/// When the emulator completes cp.async copies, TMA loads and wgmma groups (kernels/emu/emu.h):
/// at issue, which shows a buffer refilled before its readers are done, or as late as the PTX
/// rules allow, which shows a missing wait or a stage handed back before its wgmmas finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncMode {
    AtIssue = 0,
    Deferred = 1,
}

thread_local! {
    static ASYNC_MODE: Cell<AsyncMode> = const { Cell::new(AsyncMode::AtIssue) };
}

/// Runs `check` (which launches emulated kernels) once in each async mode; a failure says in
/// which.
pub fn in_both_async_modes(check: impl Fn()) {
    for mode in [AsyncMode::AtIssue, AsyncMode::Deferred] {
        ASYNC_MODE.with(|m| m.set(mode));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&check));
        ASYNC_MODE.with(|m| m.set(AsyncMode::AtIssue));
        if let Err(e) = result {
            eprintln!("(the failure above ran with the emulator's async mode {mode:?})");
            std::panic::resume_unwind(e);
        }
    }
}

/// Runs `check` with the emulator's completion deferred.
pub fn in_deferred_mode(check: impl FnOnce()) {
    ASYNC_MODE.with(|m| m.set(AsyncMode::Deferred));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
    ASYNC_MODE.with(|m| m.set(AsyncMode::AtIssue));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// The emulator keeps its scheduler state in globals: one launch at a time in this process.
static LAUNCH: Mutex<()> = Mutex::new(());
static LOADED: Mutex<Option<HashMap<String, &'static Emulated>>> = Mutex::new(None);

/// kernels/`file`.cu (`file` may name a subfolder: "emu/selftest") built for the emulator (once per test process; the library is cached in
/// the target directory under a hash of every source it includes).
pub fn load(file: &str) -> &'static Emulated {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let map = loaded.get_or_insert_with(HashMap::new);
    if let Some(e) = map.get(file) {
        return e;
    }
    let lib_path = build(file);
    // SAFETY: a library we just built from our kernel sources; it has no initialisers that
    // touch anything but its own statics.
    let lib = unsafe { libloading::Library::new(&lib_path) }
        .unwrap_or_else(|e| panic!("loading {}: {e}", lib_path.display()));
    let e: &'static Emulated = Box::leak(Box::new(Emulated {
        lib,
        file: file.to_string(),
    }));
    map.insert(file.to_string(), e);
    e
}

fn build(file: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let kernels = root.join("kernels");
    let cuda_include = Path::new(env!("NEMO_CUDA_BIN"))
        .parent()
        .unwrap()
        .join("include");
    let mut sources: Vec<PathBuf> = vec![kernels.join(format!("{file}.cu"))];
    for dir in [kernels.clone(), kernels.join("emu")] {
        let mut headers: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("cuh" | "h" | "cpp")
                )
            })
            .collect();
        headers.sort();
        sources.extend(headers);
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for s in &sources {
        std::fs::read(s).unwrap().hash(&mut hasher);
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("emu");
    std::fs::create_dir_all(&dir).unwrap();
    let stem = file.replace('/', "-");
    let out = dir.join(format!("{stem}-{:016x}.so", hasher.finish()));
    if out.exists() {
        return out;
    }
    let tmp = dir.join(format!("{stem}-{}.so.partial", std::process::id()));
    // The kernel file is compiled with g++'s thread-sanitizer instrumentation, whose calls the
    // emulator's race check (kernels/emu/race.cpp) defines; the emulator itself is not
    // instrumented, and no TSan runtime is linked.
    let objects = dir.join(format!("{stem}-{}.objects", std::process::id()));
    std::fs::create_dir_all(&objects).unwrap();
    let g = |sources: &[PathBuf], instrument: bool, out: &Path| {
        let mut cmd = Command::new("g++");
        cmd.args(["-std=c++17", "-O2", "-g", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-c"])
            .args(["-Wall", "-Werror", "-Wno-unknown-pragmas", "-DNEMO_EMU", "-include", "emu/emu.h", "-I"])
            .arg(&kernels)
            .arg("-I")
            .arg(&cuda_include);
        if instrument {
            cmd.args(["-fsanitize=thread", "--param", "tsan-instrument-func-entry-exit=0"]);
        }
        cmd.args(["-x", "c++"]).args(sources).arg("-o").arg(out);
        let built = cmd.output().expect("g++ (the host compiler nvcc also needs) runs");
        assert!(
            built.status.success(),
            "g++ failed on kernels/{file}.cu for the emulator:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
    };
    let mut linked = vec![objects.join("kernel.o")];
    g(&[kernels.join(format!("{file}.cu"))], true, &linked[0]);
    for part in ["runtime", "hopper", "race", "race_global"] {
        let o = objects.join(format!("{part}.o"));
        g(&[kernels.join(format!("emu/{part}.cpp"))], false, &o);
        linked.push(o);
    }
    let built = Command::new("g++")
        .args(["-shared", "-o"])
        .arg(&tmp)
        .args(&linked)
        .output()
        .expect("g++ links");
    assert!(built.status.success(), "linking the emulator for kernels/{file}.cu:\n{}", String::from_utf8_lossy(&built.stderr));
    std::fs::remove_dir_all(&objects).ok();
    std::fs::rename(&tmp, &out).unwrap();
    out
}

extern "C" fn run_closure<F: Fn()>(ctx: *mut c_void) {
    // SAFETY: `ctx` is the `&F` that `launch_with` passed and keeps alive for the launch.
    let f = unsafe { &*(ctx as *const F) };
    f()
}

impl Emulated {
    /// Runs `body` once per GPU thread of the launch; an error is a deadlock or a launch the
    /// GPU would refuse.
    fn launch_with<F: Fn()>(&self, cfg: LaunchConfig, body: F) -> Result<(), String> {
        self.launch_after(cfg, None, body)
    }

    /// `launch_with`, as a programmatic dependent of a kernel that wrote `primary` when given.
    fn launch_after<F: Fn()>(&self, cfg: LaunchConfig, primary: Option<&PrimaryOutputs>, body: F) -> Result<(), String> {
        let _one_at_a_time = LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
        type Hook = Option<extern "C" fn(*mut c_void)>;
        // SAFETY: defined by kernels/emu/runtime.cpp with this signature.
        let set_hooks = unsafe { *self.lib.get::<unsafe extern "C" fn(Hook, Hook, *mut c_void)>(b"emu_set_dependency_hooks").unwrap() };
        let _hooks = primary.map(|p| {
            // SAFETY: the hooks touch only `p`'s regions, which outlive the launch; removed
            // again (and the regions restored) when `_hooks` drops, before `p` can.
            unsafe { set_hooks(Some(poison_primary), Some(restore_primary), p as *const PrimaryOutputs as *mut c_void) };
            HooksSet { set_hooks, primary: p }
        });
        // SAFETY: the symbols are defined by kernels/emu/runtime.cpp with these signatures.
        let (launch, error, set_mode) = unsafe {
            (
                *self.lib.get::<LaunchFn>(b"emu_launch").unwrap(),
                *self
                    .lib
                    .get::<unsafe extern "C" fn() -> *const c_char>(b"emu_error")
                    .unwrap(),
                *self
                    .lib
                    .get::<unsafe extern "C" fn(i32)>(b"emu_set_async_mode")
                    .unwrap(),
            )
        };
        let mode = ASYNC_MODE.with(|m| m.get());
        // SAFETY: sets one global of the library; launches are serialised by LAUNCH.
        unsafe { set_mode(mode as i32) };
        let (g, b) = (cfg.grid_dim, cfg.block_dim);
        let ctx = &body as *const F as *mut c_void;
        // SAFETY: the closure outlives the call; the kernel reads and writes only the host
        // buffers whose addresses its parameters hold, which the caller keeps alive.
        let rc = unsafe {
            launch(
                g.0,
                g.1,
                g.2,
                b.0,
                b.1,
                b.2,
                cfg.shared_mem_bytes as usize,
                run_closure::<F>,
                ctx,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            // SAFETY: emu_error returns a NUL-terminated string owned by the library.
            Err(format!(
                "{} (async mode {mode:?}): {}",
                self.file,
                unsafe { CStr::from_ptr(error()) }.to_string_lossy()
            ))
        }
    }

    fn kernel<F: Copy>(&self, name: &str) -> F {
        // SAFETY: the caller names the kernel's C signature (its parameter struct by value).
        unsafe {
            *self
                .lib
                .get::<F>(name.as_bytes())
                .unwrap_or_else(|e| panic!("{}: no kernel {name}: {e}", self.file))
        }
    }

    /// Launches `name(params)`; `P` is the kernel's parameter struct (its Rust mirror).
    pub fn launch<P: Copy>(&self, name: &str, cfg: LaunchConfig, params: P) -> Result<(), String> {
        let k: unsafe extern "C" fn(P) = self.kernel(name);
        // SAFETY: `params` holds host addresses of live buffers of the sizes the kernel reads.
        self.launch_with(cfg, || unsafe { k(params) })
    }

    /// `launch_args`, as a programmatic dependent (kernels/grid_dependency.cuh) of a kernel that
    /// wrote `primary` when given: each block starts with those buffers poisoned, and the real
    /// values come back only once every thread of the block has reached griddepcontrol.wait, so
    /// a kernel that reads them before its wait gets NaNs into its output.
    pub fn launch_args_after<F: Copy>(&self, name: &str, cfg: LaunchConfig, primary: Option<&PrimaryOutputs>, call: impl Fn(F)) -> Result<(), String> {
        let k: F = self.kernel(name);
        self.launch_after(cfg, primary, || call(k))
    }

    /// Launches a kernel of any C signature `F`: `call` receives the kernel and calls it with
    /// its arguments (pointers as u64).
    pub fn launch_args<F: Copy>(&self, name: &str, cfg: LaunchConfig, call: impl Fn(F)) -> Result<(), String> {
        let k: F = self.kernel(name);
        self.launch_with(cfg, || call(k))
    }
}

/// Buffers the kernel before a dependent launch wrote. At each block's start their contents
/// (with what earlier blocks of the launch wrote: in-place kernels) are set aside and replaced
/// by poison; at the block's wait the set-aside contents come back.
pub struct PrimaryOutputs {
    regions: Vec<(*mut u8, usize)>,
    /// The contents set aside while poisoned, one per region (None when not poisoned).
    saved: std::cell::RefCell<Option<Vec<Vec<u8>>>>,
}

impl PrimaryOutputs {
    /// The caller keeps `buffers` alive and does not otherwise touch them during the launch.
    pub fn of<T: Copy>(buffers: &[&[T]]) -> PrimaryOutputs {
        let regions = buffers.iter().map(|b| (b.as_ptr() as *mut u8, std::mem::size_of_val(*b))).collect();
        PrimaryOutputs { regions, saved: std::cell::RefCell::new(None) }
    }

    /// And `buffer` too (of another element type), on the same terms as `of`.
    pub fn and<T: Copy>(mut self, buffer: &[T]) -> PrimaryOutputs {
        self.regions.push((buffer.as_ptr() as *mut u8, std::mem::size_of_val(buffer)));
        self
    }

    /// Sets the contents aside and poisons them (0xff bytes: NaN in bf16 and f32).
    fn poison(&self) {
        self.restore();
        let saved = self
            .regions
            .iter()
            .map(|&(p, len)| {
                // SAFETY: each region is a live buffer of `len` bytes (`of`), touched here only
                // between kernel threads' turns (the emulator runs one fiber at a time).
                let bytes = unsafe { std::slice::from_raw_parts_mut(p, len) };
                let kept = bytes.to_vec();
                bytes.fill(0xff);
                kept
            })
            .collect();
        *self.saved.borrow_mut() = Some(saved);
    }

    /// Puts the set-aside contents back (nothing when not poisoned).
    fn restore(&self) {
        if let Some(saved) = self.saved.borrow_mut().take() {
            for (&(p, len), kept) in self.regions.iter().zip(saved) {
                // SAFETY: as in `poison`.
                unsafe { std::slice::from_raw_parts_mut(p, len) }.copy_from_slice(&kept);
            }
        }
    }
}

extern "C" fn poison_primary(ctx: *mut c_void) {
    // SAFETY: `launch_after` passes the PrimaryOutputs it keeps alive for the launch.
    unsafe { &*(ctx as *const PrimaryOutputs) }.poison()
}

extern "C" fn restore_primary(ctx: *mut c_void) {
    // SAFETY: as for poison_primary.
    unsafe { &*(ctx as *const PrimaryOutputs) }.restore()
}

/// Removes the dependency hooks and restores the primary's outputs when a launch ends.
struct HooksSet<'a> {
    set_hooks: unsafe extern "C" fn(Option<extern "C" fn(*mut c_void)>, Option<extern "C" fn(*mut c_void)>, *mut c_void),
    primary: &'a PrimaryOutputs,
}

impl Drop for HooksSet<'_> {
    fn drop(&mut self) {
        // SAFETY: clears the library's hooks (null pointers), under the launch lock.
        unsafe { (self.set_hooks)(None, None, std::ptr::null_mut()) };
        self.primary.restore();
    }
}

/// The host address of a buffer, as the kernels' parameter structs hold device addresses.
pub fn addr<T>(v: &[T]) -> u64 {
    v.as_ptr() as u64
}
