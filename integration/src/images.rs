//! Test images built offline: busybox (from Debian's `busybox-static`) and a
//! pause image (a static C program compiled here), packed as OCI layouts
//! with umoci and imported into containerd with `ctr`.
//!
//! Layouts are built once per cache directory; a lock file keeps parallel
//! test binaries from building them twice.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

use crate::proc::run;

/// Reference of the busybox test image.
pub const BUSYBOX: &str = "localhost/keelson/busybox:test";
/// Reference of the pause (sandbox) image.
pub const PAUSE: &str = "localhost/keelson/pause:test";

/// Bump when the recipe changes so old caches are rebuilt.
const RECIPE: &str = "v1";

/// Keelson's pause program: sleeps until told to stop, reaping children.
const PAUSE_C: &str = r#"
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_stop(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);
    signal(SIGCHLD, on_child);
    for (;;) pause();
}
"#;

/// Built layouts and their tarballs.
#[derive(Debug, Clone)]
pub struct Images {
    pub dir: PathBuf,
}

impl Images {
    /// OCI layout directory of `name` (`busybox` or `pause`).
    pub fn layout(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Tarball of the layout of `name`, for `ctr images import`.
    pub fn tarball(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.tar"))
    }

    /// Imports both images into containerd's `k8s.io` namespace.
    pub fn import(&self, containerd_socket: &Path) -> crate::Result<()> {
        for name in ["pause", "busybox"] {
            run(Command::new("ctr")
                .arg("--address")
                .arg(containerd_socket)
                .args(["-n", "k8s.io", "images", "import", "--no-unpack"])
                .arg(self.tarball(name)))?;
        }
        Ok(())
    }
}

/// Builds (or reuses) the test images under `cache`.
pub fn build(cache: &Path) -> crate::Result<Images> {
    let dir = cache.join(RECIPE);
    let done = dir.join("done");
    if done.exists() {
        return Ok(Images { dir });
    }
    fs::create_dir_all(cache)?;
    let lock = fs::File::create(cache.join("build.lock"))?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("locking image cache: {e}"))?;
    if done.exists() {
        return Ok(Images { dir });
    }
    let work = cache.join(format!("{RECIPE}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    build_busybox(&work).context("building busybox image")?;
    build_pause(&work).context("building pause image")?;
    fs::write(work.join("done"), b"")?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&work, &dir)?;
    Ok(Images { dir })
}

/// Creates a one-layer image `reference` in layout `dir/<name>` from the
/// rootfs that `fill` prepares, with `cmd` as its command.
fn image(
    work: &Path,
    name: &str,
    reference: &str,
    cmd: &[&str],
    fill: impl FnOnce(&Path) -> crate::Result<()>,
) -> crate::Result<()> {
    image_with(work, name, reference, &[], cmd, fill)
}

/// [`image`] with an entrypoint as well (a pod's `args` then replace only
/// `cmd`).
fn image_with(
    work: &Path,
    name: &str,
    reference: &str,
    entrypoint: &[&str],
    cmd: &[&str],
    fill: impl FnOnce(&Path) -> crate::Result<()>,
) -> crate::Result<()> {
    let layout = work.join(name);
    let bundle = work.join(format!("{name}.bundle"));
    let img = format!("{}:build", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &img]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &img])
        .arg(&bundle))?;
    fill(&bundle.join("rootfs"))?;
    run(Command::new("umoci")
        .args(["repack", "--image", &img])
        .arg(&bundle))?;
    let mut config = Command::new("umoci");
    config.args([
        "config",
        "--image",
        &img,
        "--config.env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--architecture",
        "amd64",
        "--os",
        "linux",
    ]);
    for e in entrypoint {
        config.args(["--config.entrypoint", e]);
    }
    for c in cmd {
        config.args(["--config.cmd", c]);
    }
    run(&mut config)?;
    run(Command::new("umoci").args(["tag", "--image", &img, reference]))?;
    run(Command::new("umoci").args(["rm", "--image", &img]))?;
    run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
    fs::remove_dir_all(&bundle)?;
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(work.join(format!("{name}.tar")))
        .arg("."))?;
    Ok(())
}

fn build_busybox(work: &Path) -> crate::Result<()> {
    image(work, "busybox", BUSYBOX, &["/bin/sh"], |root| {
        for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
            fs::create_dir_all(root.join(d))?;
        }
        fs::copy("/bin/busybox", root.join("bin/busybox"))?;
        let list = run(Command::new("/bin/busybox").arg("--list"))?;
        for applet in list
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "busybox")
        {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )?;
        fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
        Ok(())
    })
}

fn build_pause(work: &Path) -> crate::Result<()> {
    let src = work.join("pause.c");
    let bin = work.join("pause.bin");
    fs::write(&src, PAUSE_C)?;
    run(Command::new("gcc")
        .args(["-static", "-Os", "-o"])
        .arg(&bin)
        .arg(&src))?;
    image(work, "pause", PAUSE, &["/pause"], |root| {
        fs::copy(&bin, root.join("pause"))?;
        Ok(())
    })
}

/// Builds `n` images under `dir` that share no layer: image `i` is the
/// layout `dir/distinct-<i>` (reference `distinct:<i>`) holding one file
/// of `bytes` pseudo-random bytes. For pull benchmarks.
pub fn build_distinct(dir: &Path, n: usize, bytes: usize) -> crate::Result<Vec<PathBuf>> {
    (0..n)
        .map(|i| {
            let name = format!("distinct-{i}");
            image(dir, &name, &format!("distinct:{i}"), &["/data"], |root| {
                // xorshift64: incompressible enough that layers differ in
                // size as little as in content.
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
                let mut data = Vec::with_capacity(bytes + 8);
                while data.len() < bytes {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    data.extend_from_slice(&x.to_le_bytes());
                }
                data.truncate(bytes);
                fs::write(root.join("data"), data)?;
                Ok(())
            })?;
            Ok(dir.join(name))
        })
        .collect()
}

/// Builds (or reuses) an image `reference` holding the program `binary` as
/// `/usr/local/bin/<file name>` (its entrypoint), stripped of debug info,
/// with the shared libraries `ldd` lists, and returns the tarball to
/// import. Cached under `cache` by the binary's size and modification
/// time, so an unchanged build is not packed again.
pub fn build_program(cache: &Path, binary: &Path, reference: &str) -> crate::Result<PathBuf> {
    let meta = fs::metadata(binary).with_context(|| format!("reading {}", binary.display()))?;
    let file = binary
        .file_name()
        .context("binary has no file name")?
        .to_string_lossy()
        .into_owned();
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let key = format!("{file}-{}-{mtime}", meta.len());
    let dir = cache.join("programs");
    let tar = dir.join(format!("{key}.tar"));
    if tar.exists() {
        return Ok(tar);
    }
    fs::create_dir_all(&dir)?;
    let work = dir.join(format!("{key}.tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let libs = run(Command::new("ldd").arg(binary))?;
    let target = format!("/usr/local/bin/{file}");
    image_with(&work, "program", reference, &[&target], &[], |root| {
        for d in ["usr/local/bin", "tmp", "etc"] {
            fs::create_dir_all(root.join(d))?;
        }
        run(Command::new("objcopy")
            .arg("--strip-debug")
            .arg(binary)
            .arg(root.join(&target[1..])))?;
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x…)`.
        for lib in libs.lines().filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(str::to_string)
        }) {
            let dest = root.join(lib.trim_start_matches('/'));
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(&lib, &dest).with_context(|| format!("copying {lib}"))?;
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/:/bin/false\nnonroot:x:65532:65532:nonroot:/:/bin/false\n",
        )?;
        fs::write(root.join("etc/group"), "root:x:0:\nnonroot:x:65532:\n")?;
        Ok(())
    })?;
    fs::rename(work.join("program.tar"), &tar)?;
    let _ = fs::remove_dir_all(&work);
    Ok(tar)
}

/// Imports an image tarball into containerd's `k8s.io` namespace.
pub fn import(containerd_socket: &Path, tarball: &Path) -> crate::Result<()> {
    run(Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket)
        .args(["-n", "k8s.io", "images", "import", "--no-unpack"])
        .arg(tarball))?;
    Ok(())
}
