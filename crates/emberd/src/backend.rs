//! Choosing the compute device (`--backend`) and loading a model onto it with a progress bar.

use anyhow::{Context, Result};
use burn::tensor::Device;
use clap::ValueEnum;
use ember_gguf::GgufFile;
use ember_model::{ExpertPlacement, LoadOptions, Model};
use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// Where the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The CPU (burn-flex with ember's quantized kernels).
    Flex,
    /// A GPU through burn-wgpu (Vulkan, Metal, DX12); needs the `wgpu` build feature.
    Wgpu,
}

/// Sizes the thread pools: ember's kernel pool (the quantized products) and rayon's global pool
/// (burn-flex's own parallel ops) get `threads` threads each, by default one per physical core
/// (SMT siblings share a core's load units, and decode is bound by memory). Only one pool runs at
/// a time. Returns the number of threads.
pub fn init_threads(threads: Option<usize>) -> Result<usize> {
    let n = match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => ember_quant::pool::default_threads(),
    };
    ember_quant::pool::set_global_threads(n);
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("thread pool")?;
    Ok(ember_quant::pool::global().threads())
}

/// The device for `backend`, or a clear error when it cannot be had.
pub fn device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Flex => Ok(Device::flex()),
        Backend::Wgpu => wgpu_device(),
    }
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device> {
    anyhow::bail!(
        "this emberd was built without the wgpu backend (rebuild with `cargo build --release -p emberd --features wgpu`)"
    )
}

/// The default wgpu adapter (`WGPU_ADAPTER_NAME`, `WGPU_BACKEND` and `CUBECL_WGPU_DEFAULT_DEVICE`
/// steer wgpu's choice). cubecl creates devices lazily and panics when there is no adapter, so the
/// device is touched here, once, with that panic turned into an error.
#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device> {
    use burn::tensor::{DeviceKind, Tensor};
    let device = Device::wgpu(DeviceKind::DefaultDevice);
    let probe = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(move || {
        Tensor::<1>::zeros([1], &probe)
            .into_data()
            .try_to_vec::<f32>()
            .is_ok()
    });
    std::panic::set_hook(hook);
    match ok {
        Ok(true) => Ok(device),
        _ => anyhow::bail!(
            "no usable GPU adapter for --backend wgpu (install a Vulkan driver, e.g. Mesa's \
             mesa-vulkan-drivers, or use --backend flex)"
        ),
    }
}

/// Files from this size up get a load progress bar (smaller ones load in well under a second).
const BAR_MIN_BYTES: u64 = 256 << 20;

/// Loads the model of `file` onto `device` (with `cpu_moe`, routed experts stay on the CPU); a
/// progress bar on stderr (when it is a terminal) for large files and for GPU devices, where every
/// layer is uploaded.
pub fn load_model(
    file: &GgufFile,
    device: &Device,
    backend: Backend,
    cpu_moe: bool,
    what: &str,
) -> Result<Model> {
    let big = file.file_len() >= BAR_MIN_BYTES || backend != Backend::Flex;
    let bar = if big {
        let bar = ProgressBar::new(0).with_message(format!("loading {what}"));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} layers {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    } else {
        ProgressBar::hidden()
    };
    let opts = LoadOptions {
        experts: if cpu_moe {
            ExpertPlacement::Cpu
        } else {
            ExpertPlacement::WithModel
        },
    };
    let model = Model::load_with_options(file, device, opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    model.with_context(|| format!("loading {what}"))
}
