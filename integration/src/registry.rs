//! A real image registry (Debian's `docker-registry`) on 127.0.0.1, with
//! optional htpasswd auth, and pushes with skopeo from the offline layouts.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::proc::{run, stop_child, wait_until};

/// Basic-auth user of a registry started with auth.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A running registry.
pub struct Registry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    pub credentials: Option<Credentials>,
}

impl Registry {
    /// Starts a registry on a free loopback port; with `credentials` it
    /// requires basic auth (bcrypt htpasswd).
    pub fn start(credentials: Option<Credentials>) -> crate::Result<Self> {
        for tool in ["docker-registry", "skopeo"] {
            anyhow::ensure!(
                crate::proc::which(tool).is_some(),
                "{tool} not found: install Debian's {tool} package"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("keelson-registry-")
            .tempdir()?;
        let port = free_port()?;
        let auth = match &credentials {
            Some(c) => {
                anyhow::ensure!(
                    crate::proc::which("htpasswd").is_some(),
                    "htpasswd not found: install apache2-utils"
                );
                let line = run(Command::new("htpasswd").args(["-Bbn", &c.username, &c.password]))?;
                fs::write(dir.path().join("htpasswd"), line.trim())?;
                format!(
                    "auth:\n  htpasswd:\n    realm: keelson-test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
            root = dir.path().join("data").display(),
        );
        fs::write(dir.path().join("config.yml"), config)?;
        let log = fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            // Own process group: a Ctrl-C in the terminal reaches only the
            // harness, which then stops this process itself.
            .process_group(0)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        let me = Self {
            dir,
            child: Some(child),
            port,
            credentials,
        };
        if !wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        }) {
            bail!(
                "registry did not listen on 127.0.0.1:{port}; log:\n{}",
                me.log_text()
            );
        }
        Ok(me)
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log (access log lines included).
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes image `reference` from OCI `layout` to `<host>/<repo_tag>`;
    /// returns the full reference pulled clients should use.
    pub fn push(&self, layout: &Path, reference: &str, repo_tag: &str) -> crate::Result<String> {
        let target = format!("{}/{repo_tag}", self.host());
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = &self.credentials {
            cmd.arg("--dest-creds")
                .arg(format!("{}:{}", c.username, c.password));
        }
        cmd.arg(format!("oci:{}:{reference}", layout.display()))
            .arg(format!("docker://{target}"));
        run(&mut cmd)?;
        Ok(target)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }
}

fn free_port() -> crate::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
