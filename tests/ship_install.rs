//! `install/install.sh` on the real engine: a first install (containers, permissions, the agent
//! reaching devcloud), a second run (same identity, nothing duplicated), failures that must leave
//! the running install alone, the in-place migration from the Python agent, an offline install from
//! an image archive, and uninstall/purge. The provisioning API is the HTTPS stand-in of
//! `support::ship::provisioning`; every install has its own names, state dir and HOME.

// Tests: a failed expectation is the test's message; casts of test data need no checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::ship::{Deployment, Mode, Stack, WAIT};
use support::{ContainerGuard, LOCAL_IMAGE, NetworkGuard, docker, docker_try, inspect, unique};

async fn install(dep: &Deployment, extra: &[&str]) -> support::ship::Run {
    run(dep.command(extra)).await
}

async fn run(cmd: std::process::Command) -> support::ship::Run {
    tokio::task::spawn_blocking(move || {
        let mut cmd = cmd;
        let out = cmd.output().expect("run install.sh");
        support::ship::Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("join")
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Containers (any state) whose name is exactly `name`.
fn count_named(name: &str) -> usize {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=^/{name}$"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .count()
}

/// The mounts of a container: destination → (source or volume name, read-write).
fn mounts(c: &Value) -> Vec<(String, String, bool)> {
    c["Mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            let src = m["Name"]
                .as_str()
                .filter(|s| !s.is_empty())
                .or(m["Source"].as_str())
                .unwrap_or_default()
                .to_owned();
            (
                m["Destination"].as_str().unwrap_or_default().to_owned(),
                src,
                m["RW"] == true,
            )
        })
        .collect()
}

fn env_of(c: &Value) -> Vec<String> {
    c["Config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Runs `<binary> health` in the container: exit 0 and the output.
fn health(container: &str, binary: &str) -> Option<String> {
    docker_try(&["exec", container, binary, "health"])
}

/// Reads a file of the deployment's volume through a throwaway container.
fn read_volume(dep: &Deployment, rel: &str) -> Option<String> {
    docker_try(&[
        "run",
        "--rm",
        "--label",
        "orchestrator-test=1",
        "-v",
        &format!("{}:/v:ro", dep.volume),
        LOCAL_IMAGE,
        "/bin/cat",
        &format!("/v/{rel}"),
    ])
}

async fn wait_connected(stack: &Stack, dep: &Deployment, id: &str) {
    if let Err(e) = stack.cloud.wait_for_agent(Some(id), WAIT).await {
        panic!(
            "the installed agent {id} did not reach devcloud: {e}\n{}",
            dep.agent_logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_install_runs_the_agent_and_a_second_run_keeps_its_identity() {
    let stack = Stack::start().await;
    let dep = Deployment::new(&stack);

    let run = install(&dep, &[]).await;
    run.assert_ok();
    let id = dep.cert_cn();
    assert!(!id.is_empty(), "no CN in the installed certificate");
    assert!(
        run.stdout.contains("INSTALLATION COMPLETE")
            && run.stdout.contains(&format!("Orchestrator ID: {id}")),
        "summary missing:\n{}",
        run.stdout
    );
    assert_eq!((stack.prov.id_requests(), stack.prov.enrollments()), (1, 1));

    // Credentials: the directory and the key private, the certificate readable.
    let mtls = dep.mtls_dir();
    assert_eq!(mode_of(&mtls), 0o700);
    assert_eq!(mode_of(&mtls.join("client.key")), 0o600);
    assert_eq!(mode_of(&mtls.join("client.crt")), 0o644);
    assert!(
        !std::fs::read_dir(&mtls).expect("mtls dir").any(|e| e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .contains("csr")),
        "the CSR or its config was left behind"
    );

    // The containers, as the installer is documented to run them.
    let agent = inspect(&dep.agent).expect("agent container");
    let netmon = inspect(&dep.netmon).expect("netmon container");
    for c in [&agent, &netmon] {
        assert_eq!(c["State"]["Running"], true, "{c}");
        assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
        assert_eq!(c["HostConfig"]["CapDrop"], json!(["ALL"]));
        assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true);
        assert!(
            mounts(c).contains(&(dep.state_dir.clone(), dep.volume.clone(), true)),
            "volume {} not at {}: {:?}",
            dep.volume,
            dep.state_dir,
            mounts(c)
        );
    }
    assert_eq!(netmon["HostConfig"]["NetworkMode"], "host");
    // Dedicated NICs and serial ports (docs/netmon.md "Privileges"): the host PID namespace and
    // five capabilities, never --privileged; the agent gets none.
    assert_eq!(netmon["HostConfig"]["PidMode"], "host");
    let caps = |c: &Value| -> Vec<String> {
        let mut v: Vec<String> = c["HostConfig"]["CapAdd"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c.as_str().unwrap().trim_start_matches("CAP_").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(
        caps(&netmon),
        [
            "MKNOD",
            "NET_ADMIN",
            "NET_BIND_SERVICE",
            "SYS_ADMIN",
            "SYS_CHROOT",
            "SYS_PTRACE"
        ]
    );
    // Serial ports: the host's /dev, read-only (docs/netmon.md "Serial ports").
    assert!(
        mounts(&netmon).contains(&("/dev".into(), "/dev".into(), false)),
        "{:?}",
        mounts(&netmon)
    );
    assert!(caps(&agent).is_empty(), "{:?}", caps(&agent));
    for c in [&agent, &netmon] {
        assert_eq!(c["HostConfig"]["Privileged"], false);
    }
    assert_eq!(netmon["Config"]["Image"], dep.netmon_image);
    assert_eq!(agent["Config"]["Image"], dep.agent_image);
    assert_ne!(agent["HostConfig"]["NetworkMode"], "host");
    let agent_mounts = mounts(&agent);
    assert!(
        agent_mounts.contains(&(
            "/root/.mtls".into(),
            mtls.to_string_lossy().into_owned(),
            false
        )),
        "mTLS dir not mounted read-only: {agent_mounts:?}"
    );
    assert!(
        agent_mounts
            .iter()
            .any(|(dst, _, _)| dst == "/var/run/docker.sock"),
        "no Docker socket: {agent_mounts:?}"
    );
    let env = env_of(&agent);
    assert!(env.contains(&format!("HOST_NAME={}", dep.agent)), "{env:?}");
    assert!(
        env.contains(&format!("ORCHESTRATOR_NETMON_CONTAINER={}", dep.netmon)),
        "{env:?}"
    );

    // The agent reaches the cloud with the enrolled identity, heartbeats, and both answer their
    // health probe.
    let mut events = stack.cloud.subscribe();
    wait_connected(&stack, &dep, &id).await;
    let beat = support::next_event(&mut events, "heartbeat").await;
    assert_eq!(beat[0]["agent_id"], id, "{beat:?}");
    let answer = health(&dep.agent, "/orchestrator-agent").expect("agent healthy");
    assert!(answer.contains(r#""status":"ok""#), "{answer}");
    health(&dep.netmon, "/autonomy-netmon").expect("netmon healthy");

    // Second run: same identity, nothing asked of the provisioning API, nothing duplicated, and
    // the replaced agent comes back.
    let cert = sha256(&mtls.join("client.crt"));
    let key = sha256(&mtls.join("client.key"));
    let old_agent = Deployment::container_id(&dep.agent).expect("agent id");
    let mut events = stack.cloud.subscribe();
    let run = install(&dep, &[]).await;
    run.assert_ok();
    assert!(
        run.stdout.contains("keeping the existing identity"),
        "{}",
        run.stdout
    );
    assert_eq!(sha256(&mtls.join("client.crt")), cert);
    assert_eq!(sha256(&mtls.join("client.key")), key);
    assert_eq!((stack.prov.id_requests(), stack.prov.enrollments()), (1, 1));
    assert_eq!(count_named(&dep.agent), 1);
    assert_eq!(count_named(&dep.netmon), 1);
    assert_eq!(count_named(&format!("{}.previous", dep.agent)), 0);
    assert_eq!(count_named(&format!("{}.previous", dep.netmon)), 0);
    assert_ne!(
        Deployment::container_id(&dep.agent).as_deref(),
        Some(old_agent.as_str()),
        "the agent container was not replaced"
    );
    assert_eq!(
        docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{}$", dep.volume)
        ])
        .lines()
        .count(),
        1
    );
    let beat = support::next_event(&mut events, "heartbeat").await;
    assert_eq!(beat[0]["agent_id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reprovisioning_leaves_the_running_install_alone() {
    let stack = Stack::start().await;
    let dep = Deployment::new(&stack);
    install(&dep, &[]).await.assert_ok();
    let id = dep.cert_cn();
    wait_connected(&stack, &dep, &id).await;
    let mtls = dep.mtls_dir();
    let cert = sha256(&mtls.join("client.crt"));
    let key = sha256(&mtls.join("client.key"));
    let agent_id = Deployment::container_id(&dep.agent).expect("agent");
    let netmon_id = Deployment::container_id(&dep.netmon).expect("netmon");

    // A port nothing listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("https://127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    let cases: [(Mode, Vec<&str>, &str); 5] = [
        (
            Mode::Normal,
            vec!["--api-base", &down],
            "cannot reach the provisioning API",
        ),
        (Mode::IdNotJson, vec![], "id answer is not JSON"),
        (Mode::EnrollNotJson, vec![], "enrollment answer is not JSON"),
        (Mode::EnrollRefused, vec![], "enrollment refused: HTTP 403"),
        (
            Mode::OtherCn,
            vec![],
            "is for CN=someone-else-001, not the id",
        ),
    ];
    for (mode, extra, message) in cases {
        stack.prov.set_mode(mode);
        let mut args = extra.clone();
        args.push("--reprovision");
        install(&dep, &args).await.assert_failed_with(message);
        assert_eq!(sha256(&mtls.join("client.crt")), cert, "{mode:?}");
        assert_eq!(sha256(&mtls.join("client.key")), key, "{mode:?}");
        assert_eq!(
            Deployment::container_id(&dep.agent).as_deref(),
            Some(agent_id.as_str()),
            "{mode:?}: the agent was replaced"
        );
        assert_eq!(
            Deployment::container_id(&dep.netmon).as_deref(),
            Some(netmon_id.as_str()),
            "{mode:?}: netmon was replaced"
        );
        assert!(Deployment::is_running(&dep.agent), "{mode:?}");
        let leftovers: Vec<String> = std::fs::read_dir(&mtls)
            .expect("mtls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".provision"))
            .collect();
        assert!(leftovers.is_empty(), "{mode:?}: {leftovers:?}");
    }
    // Still the same session on the cloud side.
    assert!(stack.cloud.connected_agents().contains(&id));
}

/// A client identity as the Python agent's installer left it: key and certificate from the
/// cloud's CA (here devcloud's), certificate mode 644 by umask.
fn python_era_identity(stack: &Stack, dir: &Path, cn: &str) {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&stack.pki.ca_key).expect("ca key"))
        .expect("key");
    let issuer = Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(&stack.pki.ca_cert).expect("ca cert"),
        ca_key,
    )
    .expect("issuer");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CountryName, "BR");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "AutonomyLogic");
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("sign");
    std::fs::create_dir_all(dir).expect("mtls dir");
    std::fs::write(dir.join("client.crt"), cert.pem()).expect("cert");
    std::fs::write(dir.join("client.key"), key.serialize_pem()).expect("key");
    std::fs::set_permissions(
        dir.join("client.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_agent_is_replaced_in_place_and_its_runtime_adopted() {
    let stack = Stack::start().await;
    let dep = Deployment::new(&stack);

    // The Python agent's layout: its volume with the state files naming a runtime it made (no
    // labels), its two containers under the same names, and its identity in ~/.mtls.
    let plc = unique("oasplc");
    let _plc_net = NetworkGuard::internal(&format!("{plc}_internal"), &[]);
    let _plc = ContainerGuard::run(
        &plc,
        &["--network", &format!("{plc}_internal")],
        LOCAL_IMAGE,
        &[],
    );
    let plc_ip = _plc.ip_on(&format!("{plc}_internal"));
    docker(&["volume", "create", &dep.volume]);
    let vnics = json!({plc.clone(): [{
        "name": "eth0", "parent_interface": format!("{}np", &plc[..8]), "network_mode": "manual",
        "ip_address": "10.203.124.50", "subnet": "10.203.124.0/24",
        "parent_subnet": "10.203.124.0/24", "parent_gateway": "10.203.124.1",
        "mac_address": "02:42:0a:cb:7c:32", "dns": []
    }]});
    let clients = json!({plc.clone(): {"ip": plc_ip.to_string(), "name": plc.clone()}});
    let vnics_text = serde_json::to_string_pretty(&vnics).expect("json");
    let clients_text = serde_json::to_string_pretty(&clients).expect("json");
    docker(&[
        "run",
        "--rm",
        "--label",
        "orchestrator-test=1",
        "-v",
        &format!("{}:/v", dep.volume),
        LOCAL_IMAGE,
        "/bin/sh",
        "-c",
        &format!(
            "mkdir -p /v/data /v/logs && printf '%s' '{vnics_text}' > /v/runtime_vnics.json \
             && printf '%s' '{clients_text}' > /v/data/clients.json"
        ),
    ]);
    let volume_opt = format!("{}:/var/orchestrator", dep.volume);
    let _old_agent = ContainerGuard::run(&dep.agent, &["-v", &volume_opt], LOCAL_IMAGE, &[]);
    let _old_netmon = ContainerGuard::run(
        &dep.netmon,
        &["--network", "host", "-v", &volume_opt],
        LOCAL_IMAGE,
        &[],
    );
    let old_agent_id = Deployment::container_id(&dep.agent).expect("old agent");
    let py_id = unique("py");
    python_era_identity(&stack, &dep.mtls_dir(), &py_id);

    // The new images are not there: nothing of the old install may be touched.
    let missing = format!("127.0.0.1:9/orchestrator-test/missing:{py_id}");
    install(&dep, &["--agent-image", &missing])
        .await
        .assert_failed_with("no local copy");
    assert_eq!(
        Deployment::container_id(&dep.agent).as_deref(),
        Some(old_agent_id.as_str())
    );
    assert!(Deployment::is_running(&dep.agent) && Deployment::is_running(&dep.netmon));

    // The real run: the identity is kept (no provisioning), the containers are replaced, the
    // state files stay and the runtime is adopted.
    let run = install(&dep, &[]).await;
    run.assert_ok();
    assert!(run.stdout.contains("migrating"), "{}", run.stdout);
    assert_eq!(stack.prov.id_requests(), 0, "a valid identity was replaced");
    assert_eq!(dep.cert_cn(), py_id);
    assert_eq!(mode_of(&dep.mtls_dir()), 0o700);
    assert_eq!(
        inspect(&dep.agent).expect("agent")["Config"]["Image"],
        dep.agent_image
    );
    assert_eq!(
        inspect(&dep.netmon).expect("netmon")["Config"]["Image"],
        dep.netmon_image
    );
    wait_connected(&stack, &dep, &py_id).await;

    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        let ack = stack
            .cloud
            .emit_with_ack(
                Some(&py_id),
                "get_device_status",
                vec![json!({"correlation_id": 1, "device_id": plc})],
                Duration::from_secs(30),
            )
            .await
            .expect("ack");
        if ack[0]["status"] != "error"
            || !ack[0]["error"].to_string().contains("not found")
            || std::time::Instant::now() > deadline
        {
            break ack[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_ne!(status["status"], "error", "runtime not adopted: {status}");
    // Adopted: the agent joined the runtime's internal network (its boot reconcile).
    let joined = support::poll(WAIT, || {
        let net = support::inspect_network(&format!("{plc}_internal"))?;
        let containers = net["Containers"].as_object()?;
        containers
            .values()
            .any(|c| c["Name"] == dep.agent.as_str())
            .then_some(())
    })
    .await;
    assert!(
        joined.is_some(),
        "agent not on {plc}_internal\n{}",
        dep.agent_logs()
    );
    let vnics_after = read_volume(&dep, "runtime_vnics.json").expect("runtime_vnics.json kept");
    let clients_after = read_volume(&dep, "data/clients.json").expect("clients.json kept");
    assert!(vnics_after.contains(&plc), "{vnics_after}");
    assert!(clients_after.contains(&plc), "{clients_after}");
    assert!(
        Deployment::is_running(&plc),
        "the adopted runtime must keep running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_install_from_an_archive_then_uninstall_and_purge_leave_nothing() {
    let stack = Stack::start().await;
    let dep = Deployment::new(&stack);
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = dir.path().join("images.tar");
    let archive_s = archive.to_string_lossy().into_owned();
    docker(&[
        "save",
        "-o",
        &archive_s,
        &dep.agent_image,
        &dep.netmon_image,
    ]);
    // Only the archive has them now.
    docker(&["image", "rm", &dep.agent_image, &dep.netmon_image]);

    // As `curl -fsSL <url> | sudo bash -s -- ...` runs it: the script on standard input.
    run(dep.command_piped(&["--image-archive", &archive_s]))
        .await
        .assert_ok();
    let id = dep.cert_cn();
    wait_connected(&stack, &dep, &id).await;
    // Something the agent made (its labels, its instance), for purge to find.
    let runtime = unique("oasrt");
    let instance_label = format!("edge.autonomy.instance={}", dep.state_dir);
    let _rt = ContainerGuard::run(
        &runtime,
        &[
            "--label",
            "edge.autonomy.managed-by=orchestrator-agent",
            "--label",
            &instance_label,
        ],
        LOCAL_IMAGE,
        &[],
    );

    install(&dep, &["--uninstall"]).await.assert_ok();
    assert!(inspect(&dep.agent).is_none() && inspect(&dep.netmon).is_none());
    assert!(dep.volume_exists(), "--uninstall alone keeps the volume");
    assert!(
        dep.mtls_dir().join("client.key").exists(),
        "and the credentials"
    );
    assert!(Deployment::is_running(&runtime), "and the runtimes");

    install(&dep, &["--uninstall", "--purge"]).await.assert_ok();
    assert!(!dep.volume_exists(), "the volume is left");
    assert!(!dep.mtls_dir().exists(), "the credentials are left");
    assert!(inspect(&runtime).is_none(), "the runtime is left");
    assert!(docker_try(&["image", "inspect", &dep.agent_image]).is_none());
    assert!(docker_try(&["image", "inspect", &dep.netmon_image]).is_none());
    assert!(support::containers_with_label(&instance_label).is_empty());
    assert!(support::networks_with_label(&instance_label).is_empty());
}
