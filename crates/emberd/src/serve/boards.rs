//! Board profiles (`boards/*.toml`, embedded in the binary, plus user files) and auto-detection
//! of the board `emberd serve` runs on.
//!
//! Detection reads what the kernel says about the machine, the way `raspi-config` and NVIDIA's
//! `jetson_release` do: `/proc/device-tree/model` (a NUL-terminated string on every device-tree
//! board), the `Model` line of `/proc/cpuinfo` (Raspberry Pi kernels; survives containers that
//! hide the device tree), then the CPU architecture. The memory budget of a profile is a ceiling:
//! it is scaled down to `ram_fraction × MemTotal` (and 90% of a cgroup `memory.max`) so a 2 GB
//! Pi 4 does not inherit the 8 GB one's figure. [`detect`] takes the files' contents as
//! parameters so it is tested with real strings of those boards.

use crate::backend::Backend;
use crate::serve::admission::{ByteSize, human_bytes};
use crate::serve::config::KvDtype;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer};
use std::path::Path;

/// A board profile: what ember may use on a class of machine and how it runs there.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub description: String,
    /// Compute threads; `None`: one per physical core.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Bytes ember may use (weights resident + KV + scratch): the ceiling before scaling.
    #[serde(deserialize_with = "de_bytes")]
    pub memory_budget: u64,
    /// The share of MemTotal the budget may take on a board with less memory than the profile
    /// assumes (the rest is the OS, page cache for the model file, other services).
    pub ram_fraction: f64,
    /// Default context length per slot.
    pub max_ctx: usize,
    pub kv_dtype: KvDtype,
    #[serde(deserialize_with = "de_backend")]
    pub backend: Backend,
    /// Default number of parallel sequences.
    pub slots: usize,
    /// A registry name (`models/*.toml`).
    pub default_model: String,
}

/// The chosen profile (budget and threads already fitted to this machine) and one sentence of
/// what was chosen and why, to log at start.
#[derive(Debug, Clone)]
pub struct Choice {
    pub board: Board,
    pub summary: String,
}

/// The profiles built into the binary, so it works without the repository.
const BUILTIN: [(&str, &str); 5] = [
    ("rpi4", include_str!("../../../../boards/rpi4.toml")),
    ("rpi5", include_str!("../../../../boards/rpi5.toml")),
    (
        "jetson-orin-nano",
        include_str!("../../../../boards/jetson-orin-nano.toml"),
    ),
    ("x86-box", include_str!("../../../../boards/x86-box.toml")),
    (
        "gpu-gateway",
        include_str!("../../../../boards/gpu-gateway.toml"),
    ),
];

/// Share of a cgroup `memory.max` the budget may take: everything in the cgroup is emberd, so
/// only allocator slack, stacks and page tables need room.
const CGROUP_FRACTION: f64 = 0.9;

impl Board {
    /// Parses and checks a board TOML; `origin` names it in errors.
    pub fn from_toml(origin: &str, text: &str) -> Result<Board> {
        let b: Board = toml::from_str(text).with_context(|| format!("board {origin}"))?;
        let bad = |what: &str| anyhow::anyhow!("board {origin}: {what}");
        if b.name.trim().is_empty() {
            return Err(bad("`name` is empty"));
        }
        if !(b.ram_fraction > 0.0 && b.ram_fraction <= 1.0) {
            return Err(bad("`ram_fraction` must be in (0, 1]"));
        }
        if b.memory_budget == 0 || b.max_ctx == 0 || b.slots == 0 || b.threads == Some(0) {
            return Err(bad(
                "`memory_budget`, `max_ctx`, `slots` and `threads` must be at least 1",
            ));
        }
        Ok(b)
    }

    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Option<Board> {
        let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        // The embedded files are checked by a unit test; a parse failure here is an ember bug,
        // reported as "no such board" rather than a panic.
        Board::from_toml(name, text).ok()
    }

    /// Names of the built-in profiles.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }
}

/// Whether a `board` value names a file rather than a profile.
pub fn is_path(s: &str) -> bool {
    s.contains('/') || s.ends_with(".toml")
}

/// What the machine says about itself; [`Probe::read`] fills it from `/proc` and `/sys`.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// `/proc/device-tree/model`.
    pub device_tree_model: Option<String>,
    /// `/proc/cpuinfo`.
    pub cpuinfo: Option<String>,
    /// `/proc/meminfo`.
    pub meminfo: Option<String>,
    /// The process's cgroup v2 `memory.max` ("max" or bytes).
    pub cgroup_memory_max: Option<String>,
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// CPUs this process may use.
    pub cpus: usize,
}

impl Probe {
    /// Reads this machine. Missing files are `None` (containers, non-Linux): detection then
    /// falls back to the architecture.
    pub fn read() -> Probe {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let cgroup = read("/proc/self/cgroup").and_then(|c| {
            // cgroup v2: one line "0::/system.slice/emberd.service".
            let rel = c
                .lines()
                .find_map(|l| l.strip_prefix("0::"))?
                .trim()
                .to_owned();
            let dir = Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'));
            std::fs::read_to_string(dir.join("memory.max")).ok()
        });
        Probe {
            // The device tree exposes raw bytes ending in NUL; lossy keeps odd firmware readable.
            device_tree_model: std::fs::read("/proc/device-tree/model")
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            cpuinfo: read("/proc/cpuinfo"),
            meminfo: read("/proc/meminfo"),
            cgroup_memory_max: cgroup,
            arch: std::env::consts::ARCH.to_owned(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Chooses the board: `None` or `"auto"` detects; a name looks in `boards_dir` first (user
/// profiles override built-ins), then the built-ins; a path loads that file. The budget and
/// threads are then fitted to this machine.
pub fn choose(request: Option<&str>, boards_dir: Option<&Path>) -> Result<Choice> {
    let probe = Probe::read();
    let lookup = |name: &str| find(name, boards_dir);
    match request.map(str::trim) {
        None | Some("auto") => detect(&probe, &lookup),
        Some(path) if is_path(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read board file {path}"))?;
            let board = Board::from_toml(path, &text)?;
            Ok(fit(board, &format!("from {path}"), &probe))
        }
        Some(name) => {
            let board = lookup(name)?;
            Ok(fit(board, "named in the configuration", &probe))
        }
    }
}

/// A profile by name: `<boards_dir>/<name>.toml` if it exists, else a built-in one.
pub fn find(name: &str, boards_dir: Option<&Path>) -> Result<Board> {
    if let Some(dir) = boards_dir {
        let path = dir.join(format!("{name}.toml"));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Board::from_toml(&path.display().to_string(), &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot read board file {}: {e}", path.display()),
        }
    }
    Board::builtin(name).with_context(|| {
        let names: Vec<_> = Board::builtin_names().collect();
        format!(
            "unknown board {name:?}; built-in boards: {}",
            names.join(", ")
        )
    })
}

/// Detects the board from `probe`, taking profiles from `lookup`.
pub fn detect(probe: &Probe, lookup: &dyn Fn(&str) -> Result<Board>) -> Result<Choice> {
    let dt = probe
        .device_tree_model
        .as_deref()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c.is_whitespace()))
        .filter(|s| !s.is_empty());
    let cpu_model = probe
        .cpuinfo
        .as_deref()
        .and_then(|c| cpuinfo_field(c, "Model"));
    let (model, source) = match (dt, cpu_model) {
        (Some(m), _) => (Some(m), "/proc/device-tree/model"),
        (None, Some(m)) => (Some(m), "/proc/cpuinfo"),
        (None, None) => (None, ""),
    };
    let by_model = model.and_then(|m| board_for_model(m).map(|(name, note)| (name, m, note)));
    let (name, why) = match by_model {
        Some((name, m, note)) => (name, format!("from {source}: {m}{note}")),
        None => {
            let cpu = probe
                .cpuinfo
                .as_deref()
                .and_then(|c| cpuinfo_field(c, "model name"))
                .map_or_else(String::new, |c| format!(", {c}"));
            let unknown = model.map_or_else(String::new, |m| format!("unknown board {m:?}, "));
            match probe.arch.as_str() {
                "x86_64" | "x86" => ("x86-box", format!("from {unknown}arch {}{cpu}", probe.arch)),
                // An unknown ARM/RISC-V board is more likely a small SBC than a server: take the
                // most conservative profile, whose budget still scales with MemTotal.
                arch => (
                    "rpi4",
                    format!(
                        "{unknown}arch {arch}{cpu}: the conservative profile; set `board` to choose"
                    ),
                ),
            }
        }
    };
    Ok(fit(lookup(name)?, &why, probe))
}

/// Maps a device-tree model string to a profile, with a note when the match is approximate.
fn board_for_model(model: &str) -> Option<(&'static str, &'static str)> {
    let m = model.to_ascii_lowercase();
    if m.starts_with("raspberry pi 5")
        || m.starts_with("raspberry pi 500")
        || m.starts_with("raspberry pi compute module 5")
    {
        Some(("rpi5", ""))
    } else if m.starts_with("raspberry pi 4")
        || m.starts_with("raspberry pi 400")
        || m.starts_with("raspberry pi compute module 4")
    {
        Some(("rpi4", ""))
    } else if m.starts_with("raspberry pi") {
        // Pi 3 / Zero 2 W: weaker than a Pi 4; its profile is the closest, memory scales down.
        Some(("rpi4", " (closest profile)"))
    } else if m.contains("jetson orin nano") {
        Some(("jetson-orin-nano", ""))
    } else if m.contains("jetson") && m.contains("orin") {
        // Orin NX / AGX Orin: same CPU family with more cores and memory; raise the budget.
        Some(("jetson-orin-nano", " (closest profile)"))
    } else {
        None
    }
}

/// The value of the first `key : value` line of `/proc/cpuinfo`.
fn cpuinfo_field<'a>(cpuinfo: &'a str, key: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key)
            .then(|| v.trim())
            .filter(|v| !v.is_empty())
    })
}

/// `MemTotal` in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kb.checked_mul(1024)
}

/// Fits a profile to the machine: budget = min(profile, ram_fraction × MemTotal, 90% of the
/// cgroup limit); threads at most the CPUs this process may use.
fn fit(mut board: Board, why: &str, probe: &Probe) -> Choice {
    let profile = board.memory_budget;
    let mut notes = Vec::new();
    if let Some(total) = probe.meminfo.as_deref().and_then(mem_total) {
        let cap = (total as f64 * board.ram_fraction) as u64;
        if cap < board.memory_budget {
            board.memory_budget = cap;
            notes.push(format!(
                "{:.0}% of MemTotal {}",
                board.ram_fraction * 100.0,
                human_bytes(total)
            ));
        }
    }
    let limit = probe
        .cgroup_memory_max
        .as_deref()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(limit) = limit {
        let cap = (limit as f64 * CGROUP_FRACTION) as u64;
        if cap < board.memory_budget {
            board.memory_budget = cap;
            notes.push(format!("90% of cgroup memory.max {}", human_bytes(limit)));
        }
    }
    let budget = if board.memory_budget < profile {
        format!(
            "budget {} (profile {}, scaled to {})",
            human_bytes(board.memory_budget),
            human_bytes(profile),
            notes.last().map_or("", String::as_str)
        )
    } else {
        format!("budget {}", human_bytes(board.memory_budget))
    };
    let cpus = probe.cpus.max(1);
    let threads = match board.threads {
        Some(t) if t > cpus => {
            board.threads = Some(cpus);
            format!("threads {cpus} (profile {t}, {cpus} CPUs available)")
        }
        Some(t) => format!("threads {t}"),
        None => "threads: one per physical core".to_owned(),
    };
    let summary = format!("board {} ({why}); {budget}; {threads}", board.name);
    Choice { board, summary }
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ByteSize::deserialize(d).map(|b| b.0)
}

fn de_backend<'de, D: Deserializer<'de>>(d: D) -> Result<Backend, D::Error> {
    let s = String::deserialize(d)?;
    <Backend as clap::ValueEnum>::from_str(&s, true).map_err(|_| {
        serde::de::Error::custom(format!(
            "unknown backend {s:?}, expected \"flex\" or \"wgpu\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn probe(dt: Option<&str>, cpuinfo: &str, mem_kb: u64, arch: &str, cpus: usize) -> Probe {
        Probe {
            device_tree_model: dt.map(str::to_owned),
            cpuinfo: Some(cpuinfo.to_owned()),
            meminfo: Some(format!(
                "MemTotal:       {mem_kb} kB\nMemFree:         123456 kB\nMemAvailable:   234567 kB\n"
            )),
            cgroup_memory_max: Some("max\n".to_owned()),
            arch: arch.to_owned(),
            cpus,
        }
    }

    fn detect_builtin(p: &Probe) -> Choice {
        detect(p, &|n| find(n, None)).expect("detect")
    }

    const PI4_CPUINFO: &str = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n\
        CPU implementer\t: 0x41\nCPU part\t: 0xd08\n\nHardware\t: BCM2835\nRevision\t: c03114\n\
        Serial\t\t: 10000000abcdef01\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
    const N100_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 190\n\
        model name\t: Intel(R) N100\nstepping\t: 0\nflags\t\t: fpu vme de pse avx2\n";

    #[test]
    fn every_builtin_board_parses_and_names_a_registry_model() {
        let registry = ember_hub::Registry::builtin().expect("registry");
        for name in Board::builtin_names() {
            let (_, text) = BUILTIN.iter().find(|(n, _)| *n == name).expect("listed");
            let b = Board::from_toml(name, text).expect("parses");
            assert_eq!(b.name, name, "name field matches the file");
            assert!(
                registry.get(&b.default_model).is_some(),
                "{name}: {}",
                b.default_model
            );
        }
        assert_eq!(
            Board::builtin("gpu-gateway").map(|b| b.backend),
            Some(Backend::Wgpu)
        );
    }

    #[test]
    fn raspberry_pi_4_with_4_gb_from_the_device_tree() {
        // 4 GB Pi 4: MemTotal 3881924 kB (Raspberry Pi OS, 64-bit).
        let p = probe(
            Some("Raspberry Pi 4 Model B Rev 1.4\0"),
            PI4_CPUINFO,
            3_881_924,
            "aarch64",
            4,
        );
        let c = detect_builtin(&p);
        assert_eq!(c.board.name, "rpi4");
        let expected = (3_881_924.0 * 1024.0 * 0.65) as u64;
        assert_eq!(c.board.memory_budget, expected);
        assert!(c.board.memory_budget > 2 * GIB + GIB / 4, "~2.4 GiB");
        assert_eq!(c.board.threads, Some(4));
        assert!(
            c.summary.starts_with(
                "board rpi4 (from /proc/device-tree/model: Raspberry Pi 4 Model B Rev 1.4); budget 2.4 GiB (profile 4.0 GiB"
            ),
            "{}",
            c.summary
        );
        assert!(c.summary.ends_with("; threads 4"), "{}", c.summary);
    }

    #[test]
    fn a_2_gb_pi_4_seen_only_through_cpuinfo_gets_a_smaller_budget() {
        let p = probe(None, PI4_CPUINFO, 1_894_000, "aarch64", 4);
        let c = detect_builtin(&p);
        assert_eq!(c.board.name, "rpi4");
        assert!(
            c.board.memory_budget < 1_300_000_000,
            "{}",
            c.board.memory_budget
        );
        assert!(
            c.summary.contains("from /proc/cpuinfo: Raspberry Pi 4"),
            "{}",
            c.summary
        );
    }

    #[test]
    fn raspberry_pi_5_and_jetson_orin_nano() {
        let p = probe(
            Some("Raspberry Pi 5 Model B Rev 1.0\0"),
            "",
            8_245_000,
            "aarch64",
            4,
        );
        let c = detect_builtin(&p);
        assert_eq!(c.board.name, "rpi5");
        assert_eq!(c.board.memory_budget, (8_245_000.0 * 1024.0 * 0.75) as u64);

        let p = probe(
            Some("NVIDIA Jetson Orin Nano Developer Kit\0"),
            "",
            7_799_000,
            "aarch64",
            6,
        );
        let c = detect_builtin(&p);
        assert_eq!(c.board.name, "jetson-orin-nano");
        assert_eq!(c.board.threads, Some(6));

        let p = probe(
            Some("NVIDIA Jetson AGX Orin Developer Kit\0"),
            "",
            31_000_000,
            "aarch64",
            12,
        );
        let c = detect_builtin(&p);
        assert_eq!(c.board.name, "jetson-orin-nano");
        assert_eq!(c.board.memory_budget, 5 * GIB, "the profile ceiling");
        assert!(c.summary.contains("closest profile"), "{}", c.summary);
    }

    #[test]
    fn x86_falls_back_on_the_architecture_and_unknown_arm_is_conservative() {
        let c = detect_builtin(&probe(None, N100_CPUINFO, 16_000_000, "x86_64", 4));
        assert_eq!(c.board.name, "x86-box");
        assert_eq!(c.board.memory_budget, 8 * GIB);
        assert!(
            c.summary.contains("arch x86_64, Intel(R) N100"),
            "{}",
            c.summary
        );
        assert!(
            c.summary.ends_with("threads: one per physical core"),
            "{}",
            c.summary
        );

        let c = detect_builtin(&probe(
            Some("Pine64 RockPro64 v2.1\0"),
            "",
            3_900_000,
            "aarch64",
            2,
        ));
        assert_eq!(c.board.name, "rpi4");
        assert_eq!(c.board.threads, Some(2), "clamped to the CPUs available");
        assert!(
            c.summary
                .contains("unknown board \"Pine64 RockPro64 v2.1\""),
            "{}",
            c.summary
        );
    }

    #[test]
    fn a_cgroup_limit_lowers_the_budget_and_missing_files_do_not_fail() {
        let mut p = probe(None, N100_CPUINFO, 16_000_000, "x86_64", 4);
        p.cgroup_memory_max = Some("2147483648\n".into());
        let c = detect_builtin(&p);
        assert_eq!(c.board.memory_budget, (2.0 * GIB as f64 * 0.9) as u64);
        assert!(
            c.summary.contains("cgroup memory.max 2.0 GiB"),
            "{}",
            c.summary
        );

        let bare = Probe {
            arch: "riscv64".into(),
            cpus: 1,
            ..Probe::default()
        };
        assert_eq!(detect_builtin(&bare).board.name, "rpi4");
    }

    #[test]
    fn user_boards_override_builtins_and_bad_files_name_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = BUILTIN[0].1.replace("max_ctx = 2048", "max_ctx = 1024");
        std::fs::write(dir.path().join("rpi4.toml"), text).expect("write");
        assert_eq!(
            find("rpi4", Some(dir.path())).expect("user rpi4").max_ctx,
            1024
        );
        assert_eq!(
            find("rpi5", Some(dir.path())).expect("builtin").max_ctx,
            4096
        );
        let err = find("nope", Some(dir.path())).expect_err("unknown");
        assert!(
            format!("{err:#}").contains("built-in boards: rpi4, rpi5"),
            "{err:#}"
        );

        let bad = BUILTIN[0].1.replace("slots = 1", "slots = 1\nturbo = true");
        let err = Board::from_toml("my.toml", &bad).expect_err("unknown key");
        assert!(format!("{err:#}").contains("turbo"), "{err:#}");
        let bad = BUILTIN[0]
            .1
            .replace("ram_fraction = 0.65", "ram_fraction = 1.5");
        let err = Board::from_toml("my.toml", &bad).expect_err("fraction");
        assert!(format!("{err:#}").contains("ram_fraction"), "{err:#}");
    }
}
