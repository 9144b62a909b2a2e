//! One install as a device gets it: the images built from `dist/`, `install/install.sh` run for real
//! against the provisioning stand-in, the agent in its container on the default bridge (as the
//! original runs it) reaching devcloud at the bridge's gateway address, netmon on the host network.
//! A [`Deployment`] removes its containers, volume, image tags and whatever its agent made when
//! dropped; a [`Stack`] is the cloud side.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use devcloud::pki::{self, PkiOptions, PkiPaths};
use devcloud::{DevCloud, ServerConfig};

use super::provisioning::Provisioning;
use crate::support::{
    IMAGE, InstanceCleanup, docker, docker_try, inspect, require_engine, run, unique,
};

/// Repositories of the images `scripts/build-images.sh` builds from `dist/` for the tests:
/// loopback-registry names, so the installer's pull fails at once and it uses the local copy.
pub const AGENT_REPO: &str = "127.0.0.1:9/orchestrator-test/orchestrator-agent";
pub const NETMON_REPO: &str = "127.0.0.1:9/orchestrator-test/autonomy-netmon";

/// How long anything the installed agent does may take.
pub const WAIT: Duration = Duration::from_secs(90);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The base images for this engine, built once per test process from `dist/` and tagged with the
/// binaries' checksum (so test runs of other trees on the same engine never swap them under us);
/// every deployment tags its own copies. Fails loudly when `dist/` is missing.
pub fn base_images() -> &'static (String, String) {
    static BUILT: OnceLock<(String, String)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let arch = match docker(&["version", "--format", "{{.Server.Arch}}"]).as_str() {
            "arm" => "armv7".to_owned(),
            other => other.to_owned(),
        };
        let sums = repo().join("dist").join(arch).join("SHA256SUMS");
        let out = Command::new("sha256sum")
            .arg(&sums)
            .output()
            .expect("sha256sum");
        assert!(
            out.status.success(),
            "{} is missing: scripts/test.sh runs `scripts/build-release.sh <this machine's \
             target>` before the tests",
            sums.display()
        );
        let tag = format!("ship-{}", &String::from_utf8_lossy(&out.stdout)[..12]);
        let (agent, netmon) = (
            format!("{AGENT_REPO}:{tag}"),
            format!("{NETMON_REPO}:{tag}"),
        );
        let out = Command::new("bash")
            .arg(repo().join("scripts/build-images.sh"))
            .args(["--agent-image", &agent])
            .args(["--netmon-image", &netmon])
            .output()
            .expect("run scripts/build-images.sh");
        assert!(
            out.status.success(),
            "cannot build the images from dist/: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (agent, netmon)
    })
}

/// The default bridge's gateway: the host address a container on that bridge reaches.
pub fn bridge_gateway() -> String {
    let configured = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]);
    let configured = configured.trim();
    if configured.parse::<std::net::Ipv4Addr>().is_ok() {
        return configured.to_owned();
    }
    // An engine that found its bridge already addressed at start (a restarted dockerd) may leave
    // the gateway out of the IPAM config (seen on a fresh machine): the bridge's own address is it.
    let bridge = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
    ]);
    let bridge = match bridge.trim() {
        "" | "<no value>" => "docker0",
        b => b,
    };
    let out = run("ip", &["-j", "-4", "addr", "show", "dev", bridge]);
    let links: serde_json::Value = serde_json::from_str(&out).expect("ip -j");
    links[0]["addr_info"][0]["local"]
        .as_str()
        .unwrap_or_else(|| panic!("no gateway in the bridge network's config ({configured:?}) and no address on {bridge}: {out}"))
        .to_owned()
}

/// The cloud side: a dev PKI, devcloud listening on the bridge gateway (so the agent's container
/// reaches it, as a device reaches the cloud) and the provisioning API on loopback.
pub struct Stack {
    pub pki: PkiPaths,
    pub cloud: DevCloud,
    pub prov: Provisioning,
    _dir: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Self {
        require_engine(IMAGE);
        tokio::task::spawn_blocking(base_images)
            .await
            .expect("join");
        let gateway = bridge_gateway();
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        let names = vec![gateway.clone()];
        let pki = tokio::task::spawn_blocking(move || {
            pki::generate(
                &pki_dir,
                &PkiOptions {
                    extra_server_names: names,
                    ..PkiOptions::default()
                },
            )
        })
        .await
        .expect("join")
        .expect("dev PKI");
        let listen = format!("{gateway}:0").parse().expect("gateway address");
        let cloud = DevCloud::start(ServerConfig::from_pki(&pki, listen))
            .await
            .expect("devcloud on the bridge gateway");
        let prov = Provisioning::start(&pki, &unique("dev")).await;
        Stack {
            pki,
            cloud,
            prov,
            _dir: dir,
        }
    }

    /// `https://<gateway>:<port>`: what the installed agent connects to.
    pub fn cloud_url(&self) -> String {
        let a = self.cloud.local_addr();
        format!("https://{}:{}", a.ip(), a.port())
    }
}

/// What one installer run did.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "install.sh failed ({}):\n{}\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts a non-zero exit whose error output says `needle`.
    pub fn assert_failed_with(&self, needle: &str) -> &Self {
        assert!(
            !self.status.success(),
            "install.sh should have failed:\n{}\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "install.sh's error does not say `{needle}`:\n{}\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// One install's names, each unique to the test, and its temporary HOME (so `~/.mtls` is the
/// test's). Dropping it removes the containers, what the agent made (its instance label), the
/// volume and the image tags.
pub struct Deployment {
    pub agent: String,
    pub netmon: String,
    pub volume: String,
    /// Where the volume is mounted in both containers: also the agent's instance label.
    pub state_dir: String,
    pub agent_image: String,
    pub netmon_image: String,
    pub api_base: String,
    pub cloud_url: String,
    pub ca_file: PathBuf,
    pub runtime_image: String,
    pub home: tempfile::TempDir,
    _cleanup: InstanceCleanup,
}

impl Deployment {
    pub fn new(stack: &Stack) -> Self {
        let u = unique("oas");
        let (base_agent, base_netmon) = base_images();
        let agent_image = format!("{AGENT_REPO}:{u}");
        let netmon_image = format!("{NETMON_REPO}:{u}");
        docker(&["tag", base_agent, &agent_image]);
        docker(&["tag", base_netmon, &netmon_image]);
        let state_dir = format!("/var/orchestrator-{u}");
        Deployment {
            agent: format!("{u}-agent"),
            netmon: format!("{u}-netmon"),
            volume: format!("{u}-shared"),
            _cleanup: InstanceCleanup {
                instance: state_dir.clone(),
            },
            state_dir,
            agent_image,
            netmon_image,
            api_base: stack.prov.url(),
            cloud_url: stack.cloud_url(),
            ca_file: stack.pki.ca_cert.clone(),
            runtime_image: IMAGE.to_owned(),
            home: tempfile::tempdir().expect("home"),
        }
    }

    /// `$HOME/.mtls` of the install.
    pub fn mtls_dir(&self) -> PathBuf {
        self.home.path().join(".mtls")
    }

    /// The installer with this deployment's environment: names through the environment (as an
    /// operator would export them), everything else through flags; nothing of the test
    /// process's environment leaks in.
    pub fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("install/install.sh"));
        self.configure(&mut cmd, extra);
        cmd
    }

    /// The installer read from standard input, as `curl -fsSL <url> | bash -s -- <args>` runs it.
    pub fn command_piped(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new("bash");
        cmd.args(["-s", "--"]).stdin(
            std::fs::File::open(repo().join("install/install.sh")).expect("install/install.sh"),
        );
        self.configure(&mut cmd, extra);
        cmd
    }

    fn configure(&self, cmd: &mut Command, extra: &[&str]) {
        cmd.env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
            )
            .env("HOME", self.home.path())
            .env("ORCHESTRATOR_AGENT_CONTAINER", &self.agent)
            .env("ORCHESTRATOR_NETMON_CONTAINER", &self.netmon)
            .env("ORCHESTRATOR_VOLUME", &self.volume)
            .env("ORCHESTRATOR_STATE_DIR", &self.state_dir)
            .args(["--api-base", &self.api_base])
            .args(["--cloud-url", &self.cloud_url])
            .arg("--ca-file")
            .arg(&self.ca_file)
            .args(["--agent-image", &self.agent_image])
            .args(["--netmon-image", &self.netmon_image])
            .args(["--runtime-image", &self.runtime_image])
            .args(extra);
    }

    /// Runs the installer to the end (blocking: call it from `spawn_blocking` in async tests).
    pub fn install(&self, extra: &[&str]) -> Run {
        let out = self.command(extra).output().expect("run install.sh");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The container id of `name`, `None` when there is none.
    pub fn container_id(name: &str) -> Option<String> {
        inspect(name).and_then(|c| c["Id"].as_str().map(str::to_owned))
    }

    pub fn is_running(name: &str) -> bool {
        inspect(name).is_some_and(|c| c["State"]["Running"] == true)
    }

    /// The agent's container log (for failure messages).
    pub fn agent_logs(&self) -> String {
        docker_try(&["logs", "--tail", "60", &self.agent]).unwrap_or_default()
    }

    /// The client certificate's subject CN (via openssl, independent of the code under test).
    pub fn cert_cn(&self) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(self.mtls_dir().join("client.crt"))
            .output()
            .expect("openssl");
        let subject = String::from_utf8_lossy(&out.stdout);
        subject
            .trim()
            .trim_start_matches("subject=")
            .split(',')
            .find_map(|rdn| rdn.strip_prefix("CN="))
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether the volume exists.
    pub fn volume_exists(&self) -> bool {
        docker_try(&["volume", "inspect", &self.volume]).is_some()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for name in [&self.agent, &self.netmon] {
            let _ = docker_try(&["rm", "-f", name]);
            let _ = docker_try(&["rm", "-f", &format!("{name}.previous")]);
        }
        // `_cleanup` (what the agent made) runs after this, then the volume can go: do it here
        // for the containers that hold it, and again below.
        for c in docker_try(&["ps", "-aq", "--filter", &format!("volume={}", self.volume)])
            .unwrap_or_default()
            .split_whitespace()
        {
            let _ = docker_try(&["rm", "-f", c]);
        }
        let _ = docker_try(&["volume", "rm", "-f", &self.volume]);
        let _ = docker_try(&["image", "rm", &self.agent_image, &self.netmon_image]);
    }
}
