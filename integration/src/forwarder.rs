//! The floor of what any process between kubelet and the runtime costs: a
//! minimal HTTP/2 forwarder on one current-thread runtime, nothing else —
//! no hooks, no logging, no decoding. Each accepted connection gets its
//! own connection to the runtime; requests and replies (trailers
//! included) are passed through as streams. The benchmarks run it as a
//! separate process ([`Process`]: the benchmark binary itself re-run as
//! `BIN --serve-forwarder LISTEN UPSTREAM`, see [`serve_if_asked`]) next
//! to the agent and measure both against the runtime direct.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{UnixListener, UnixStream};

/// Serves `listen`, forwarding every call to the runtime at `upstream`,
/// until the process ends.
pub async fn serve(listen: &Path, upstream: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(listen);
    let listener = UnixListener::bind(listen)?;
    loop {
        let (downstream, _) = listener.accept().await?;
        let upstream = upstream.to_path_buf();
        tokio::spawn(async move {
            let Ok(conn) = UnixStream::connect(&upstream).await else {
                return;
            };
            let Ok((sender, connection)) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(conn))
                    .await
            else {
                return;
            };
            tokio::spawn(connection);
            let service = service_fn(move |req: Request<Incoming>| {
                let mut sender = sender.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let path = parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    parts.uri = format!("http://localhost{path}")
                        .parse()
                        .unwrap_or(parts.uri);
                    let reply: Response<Incoming> = sender
                        .send_request(Request::from_parts(parts, body))
                        .await?;
                    Ok::<_, hyper::Error>(reply)
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(downstream), service)
                .await;
        });
    }
}

/// The flag that makes a benchmark binary serve as the forwarder.
const FLAG: &str = "--serve-forwarder";

/// If this process was started as a forwarder (`BIN --serve-forwarder
/// LISTEN UPSTREAM`), serves until killed and returns the outcome; else
/// `None`. Benchmark binaries call it first thing in `main`.
pub fn serve_if_asked() -> Option<std::io::Result<()>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, flag, listen, upstream] = &args[..] else {
        return None;
    };
    if flag != FLAG {
        return None;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Some(Err(e)),
    };
    Some(rt.block_on(serve(Path::new(listen), Path::new(upstream))))
}

/// The forwarder as a child process (the running binary, see
/// [`serve_if_asked`]), killed on drop.
pub struct Process {
    child: std::process::Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Starts the forwarder in front of `upstream` and waits until it
    /// listens.
    pub fn start(upstream: &Path) -> crate::Result<Self> {
        Self::start_under(&[], upstream, Duration::from_secs(10))
    }

    /// The same, run under `wrapper` (a command and its arguments, e.g.
    /// valgrind), waiting up to `wait` for the socket.
    pub fn start_under(
        wrapper: &[OsString],
        upstream: &Path,
        wait: Duration,
    ) -> crate::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("forwarder.sock");
        let exe = std::env::current_exe()?;
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(exe);
                c
            }
            None => std::process::Command::new(exe),
        };
        let mut child = cmd.arg(FLAG).arg(&socket).arg(upstream).spawn()?;
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if t.elapsed() > wait {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("forwarder did not listen within {wait:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Self {
            child,
            socket,
            _dir: dir,
        })
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
