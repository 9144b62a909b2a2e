//! Creating a runtime ([`Runtimes::create`]): check the validated request against the host and the
//! engine, take the runtime's lock, record the intent, return (accepted), then in the background
//! pull the image, make the networks, create, attach, start, verify, register and persist — and on
//! any failure undo what this operation made (container, internal network, MACVLAN networks it
//! created that nobody uses). Progress and outcome go to the operation table.

use std::net::Ipv4Addr;
use std::time::Duration;

use docker_api::{PullOptions, RemoveContainerOptions};
use tracing::{Instrument, info, info_span, warn};

use super::body::{self, Attachment, ContainerParams};
use super::net::{Ipv4Net, MacAddr};
use super::spec::{self, CreateSpec, Mode};
use super::vnic::{Generation, VnicSpec};
use super::{Error, OpHandle, OpKind, Runtimes, internal_ip_of, macvlan, naming};
use crate::state::Intent;

/// How long the synchronous "name already in use" check may take before the ack; the background
/// work checks again anyway.
const QUICK_CHECK: Duration = Duration::from_secs(3);

impl Runtimes {
    /// Accepts the creation of the runtime `spec` describes (validated by [`spec::parse_create`]):
    /// `Ok` once its intent is recorded, the work continuing in the background (its progress and
    /// outcome are the runtime's operation). Refused at once when a parent interface is not on the
    /// host, the name is in use or busy, or the agent is removing itself.
    pub async fn create(&self, spec: CreateSpec) -> Result<(), Error> {
        accept(self, spec).await
    }
}

async fn accept(rt: &Runtimes, mut spec: CreateSpec) -> Result<(), Error> {
    // Refused now rather than failing later: netmon knows the host's interfaces.
    let parents: Vec<&str> = spec.vnics.iter().map(|v| v.parent.as_str()).collect();
    let wait = rt.config().subnet_wait;
    if let Some(m) = rt.interfaces().missing_parent_within(&parents, wait).await {
        let field = format!("vnic_configs[{}].parent_interface", m.index);
        return Err(spec::SpecError {
            field,
            message: m.to_string(),
        }
        .into());
    }
    // MACVLAN needs a parent that passes frames for several MACs; a Wi-Fi station passes its own
    // only: such vNICs get netmon's proxy-ARP bridge instead (`super::wifi`), decided now, once,
    // and marked on the vNIC as the original marks it.
    mark_wifi(rt, &mut spec)?;
    super::dedicated::check(rt, &spec).await?;
    let name = spec.name.clone();
    // An operation already running on the name wins over "in use" (a create in flight is not yet
    // visible to the checks below).
    if let Some(kind) = rt.ops().running(&name) {
        return Err(super::Busy { name, kind }.into());
    }
    // Refused before taking the lock, so the refusal does not shadow the existing runtime's status.
    let in_use = || Error::Failed(format!("Container name {name} is already in use"));
    if rt.state().is_known(&name).await {
        return Err(in_use());
    }
    if let Ok(Ok(c)) = tokio::time::timeout(QUICK_CHECK, rt.docker().inspect_container(&name)).await
        && c.short_name() == name
    {
        return Err(in_use());
    }
    if rt.ops().running(naming::ORCHESTRATOR_DEVICE_ID).is_some() {
        return Err(Error::Failed(
            "The agent is removing itself (delete_orchestrator); no new runtimes".into(),
        ));
    }
    // The background work checks again; here only within the quick-check budget.
    if let Ok(taken) = tokio::time::timeout(QUICK_CHECK, check_macs_free(rt, &spec.vnics)).await {
        taken?;
    }
    let op = rt.ops().try_begin(&name, OpKind::Create)?;
    op.step(
        "validating_config",
        format!("validating the configuration of {name}"),
    );
    // The intent is durable before anything exists in the engine and before the ack: a crash from
    // here on leaves a positive mark the boot reconcile undoes (or completes, once committed).
    let create_id = new_create_id();
    let intent = Intent::Create {
        create_id: create_id.clone(),
        started_at: crate::timefmt::now_utc_micros(),
    };
    if let Err(e) = rt.state().set_intent(&name, intent).await {
        let e = Error::from(e);
        op.fail(format!("cannot record the create: {e}"));
        return Err(e);
    }
    let worker = rt.clone();
    let span = info_span!("create_runtime", runtime = %name);
    rt.spawn(async move { run(&worker, spec, create_id, op).await }.instrument(span));
    Ok(())
}

/// Marks every vNIC as Wi-Fi (proxy ARP) or not, in the spec and in what is persisted. A static
/// Wi-Fi vNIC needs its gateway: the bridge routes the runtime through it.
fn mark_wifi(rt: &Runtimes, spec: &mut CreateSpec) -> Result<(), Error> {
    for v in &mut spec.vnics {
        let wifi = rt.interfaces().is_wifi(&v.parent);
        if wifi && v.mode == Mode::Static && v.gateway.or(v.parent_gateway).is_none() {
            return Err(spec::SpecError {
                field: v.field("gateway"),
                message: format!(
                    "a static vNIC on the Wi-Fi interface {} needs a gateway (its proxy-ARP \
                     bridge routes through it)",
                    v.parent
                ),
            }
            .into());
        }
        super::wifi::mark(&mut v.raw, wifi);
        if let Some(o) = spec
            .raw_vnics
            .get_mut(v.index)
            .and_then(|o| o.as_object_mut())
        {
            super::wifi::mark(o, wifi);
        }
    }
    Ok(())
}

fn is_wifi(v: &VnicSpec) -> bool {
    super::vnic::is_proxy_arp(&v.raw)
}

/// What this operation made, for the rollback.
#[derive(Debug, Default)]
struct Made {
    container: Option<String>,
    internal_network: bool,
    macvlans: Vec<String>,
    state: bool,
    /// The dedicated-NIC record was written (and the NIC may be in the container).
    dedicated: bool,
}

/// A random id for one create attempt (64 bits, hex).
fn new_create_id() -> String {
    use rand::RngExt;
    format!("{:016x}", rand::rng().random::<u64>())
}

async fn run(rt: &Runtimes, spec: CreateSpec, create_id: String, op: OpHandle) {
    let mut made = Made::default();
    match steps(rt, &spec, &create_id, &op, &mut made).await {
        Ok(()) => {
            let n = spec.vnics.len();
            let warnings = op.warnings().len();
            let mut msg = format!(
                "Runtime container {} created successfully with {n} virtual NIC{}",
                spec.name,
                if n == 1 { "" } else { "s" }
            );
            if warnings > 0 {
                msg.push_str(&format!(" ({warnings} warning(s), see warnings)"));
            }
            op.succeed(msg);
        }
        Err(e) => {
            // The step stays the one that failed: it tells the cloud where.
            warn!(runtime = %spec.name, error = %e, "creation failed; rolling back");
            rollback(rt, &spec.name, &made).await;
            if let Err(e) = rt.state().clear_intent(&spec.name, Some(&create_id)).await {
                warn!(runtime = %spec.name, error = %e, "cannot clear the create intent");
            }
            op.fail(e.to_string());
        }
    }
}

async fn steps(
    rt: &Runtimes,
    spec: &CreateSpec,
    create_id: &str,
    op: &OpHandle,
    made: &mut Made,
) -> Result<(), Error> {
    let docker = rt.docker();
    let mut spec = spec.clone();
    let per_endpoint_macs = docker
        .api_version()
        .await
        .map_err(Error::docker("negotiating the Engine API version"))?
        .supports_endpoint_mac_at_create();
    let generated = give_macs(&mut spec, per_endpoint_macs);
    let spec = &spec;
    let name = spec.name.as_str();

    match docker.inspect_container(name).await {
        // What an undone create of ours left in the engine after its clean-up (a request of a killed
        // process that still completed): never a runtime, removed so the name is free again.
        Ok(c) if c.short_name() == name && rt.is_aborted_leftover(&c).await => {
            info!(
                runtime = name,
                "removing the leftover of an undone create of the same name"
            );
            super::kill_and_remove(rt, &c.id)
                .await
                .map_err(Error::docker(format!(
                    "removing the leftover container {name}"
                )))?;
        }
        // The engine also resolves id prefixes: only an exact name match is a clash.
        Ok(c) if c.short_name() == name => {
            return Err(Error::Failed(format!(
                "Container name {name} is already in use"
            )));
        }
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(Error::docker(format!("inspecting container {name}"))(e)),
    }

    // Image: pull (stall timeout), else the local copy.
    let (repo, tag) =
        naming::runtime_image(&rt.config().runtime_image, spec.runtime_version.as_deref());
    let image = if tag.starts_with('@') {
        format!("{repo}{tag}")
    } else {
        format!("{repo}:{tag}")
    };
    op.step("pulling_image", format!("pulling {image}"));
    let pull = PullOptions {
        stall_timeout: rt.config().pull_stall_timeout,
        ..Default::default()
    };
    if let Err(pull_err) = docker.pull_image(&image, &pull).await {
        warn!(image = %image, error = %pull_err, "pull failed; trying the local image");
        if let Err(e) = docker.inspect_image(&image).await {
            let what = match &spec.runtime_version {
                Some(v) => format!("Runtime version '{v}' not found"),
                None => format!("Runtime image {image} not found"),
            };
            return Err(Error::Failed(format!(
                "{what}: the pull failed ({pull_err}) and there is no local copy ({e})"
            )));
        }
    }

    // Networks. The lock keeps a concurrent clean-up from removing a MACVLAN network between its
    // creation here and the container's attachment.
    op.step(
        "creating_networks",
        "creating the internal and MACVLAN networks",
    );
    let net_guard = rt.network_lock().await;
    // Requested MACs only: a generated one is not the user's choice to refuse.
    let requested: Vec<VnicSpec> = spec
        .vnics
        .iter()
        .filter(|v| !generated.contains(&v.index) && !is_wifi(v))
        .cloned()
        .collect();
    check_macs_free(rt, &requested).await?;
    let internal = macvlan::ensure_internal(rt, name).await?;
    made.internal_network = internal.created;
    let mut resolved: Vec<(usize, Ipv4Net, Option<Ipv4Addr>)> = Vec::new();
    // Wi-Fi vNICs have no Docker network: netmon bridges them once the container runs.
    let macvlan_vnics: Vec<&VnicSpec> = spec.vnics.iter().filter(|v| !is_wifi(v)).collect();
    for v in &macvlan_vnics {
        let (subnet, gateway) = match v.macvlan_subnet() {
            Some(x) => x,
            None => subnet_from_netmon(rt, &v.parent, v.gateway.or(v.parent_gateway)).await?,
        };
        spec::check_static_ip(v, subnet, gateway)?;
        resolved.push((v.index, subnet, gateway));
    }
    let pairs: Vec<(usize, Ipv4Net)> = resolved.iter().map(|r| (r.0, r.1)).collect();
    spec::check_distinct_networks(&spec.vnics, &pairs)?;
    let mut attachments = Vec::new();
    for (v, (_, subnet, gateway)) in macvlan_vnics.iter().zip(&resolved) {
        let net = macvlan::ensure(rt, &v.parent, *subnet, *gateway).await?;
        if net.created {
            made.macvlans.push(net.name.clone());
        }
        attachments.push(Attachment {
            vnic: v.index,
            network: net.name,
            ip: if v.mode == Mode::Static { v.ip } else { None },
            mac: v.mac,
        });
    }

    op.step("creating_container", format!("creating container {name}"));
    let api = docker
        .api_version()
        .await
        .map_err(Error::docker("negotiating the Engine API version"))?;
    // Refused ones are left out; the status reports them from the container itself.
    let mut without = rt.refused_ulimits();
    let mut net_guard = Some(net_guard);
    let (plan, created) = loop {
        let plan = body::plan(
            &ContainerParams {
                name,
                image: &image,
                instance: rt.instance(),
                dns: &spec.dns,
                attachments: &attachments,
                create_id,
                raw_vnics: &spec.raw_vnics,
                without_ulimits: &without,
                dedicated_nic: spec.dedicated_interface.is_some(),
            },
            api,
        );
        let guard = match net_guard.take() {
            Some(g) => g,
            None => rt.network_lock().await,
        };
        let created =
            create_and_connect(rt, name, &plan, &internal.id, create_id, op, made).await?;
        drop(guard);
        op.step("starting", format!("starting {name}"));
        match start(rt, name, &created.id, &internal.id).await {
            Ok(()) => break (plan, created),
            // Applied at start, where an engine running with lower limits (rootless, nested, a
            // daemon without CAP_SYS_RESOURCE) refuses them: run without the refused ones rather
            // than not at all, and say so.
            Err(e)
                if let Some(refused) = body::refused_ulimits(&e.to_string())
                    && refused.iter().any(|r| !without.contains(r)) =>
            {
                warn!(runtime = name, error = %e, ?refused, "the engine refused real-time ulimits; creating without them");
                rt.add_refused_ulimits(&refused);
                for r in refused {
                    if !without.contains(&r) {
                        without.push(r);
                    }
                }
                super::kill_and_remove(rt, &created.id)
                    .await
                    .map_err(Error::docker(format!("removing container {name}")))?;
                made.container = None;
            }
            Err(e) => return Err(Error::docker(format!("starting container {name}"))(e)),
        }
    };

    if let Some(nic) = &spec.dedicated_interface {
        op.step(
            "moving_dedicated_nic",
            format!("moving the dedicated interface {nic} into {name}"),
        );
        // Recorded first (the original's order): a crash after the move leaves a record.
        rt.state().set_dedicated_nic(name, Some(nic)).await?;
        made.dedicated = true;
        let running = docker
            .inspect_container(&created.id)
            .await
            .map_err(Error::docker(format!("inspecting container {name}")))?;
        super::dedicated::lend(rt, nic, &running)
            .await
            .map_err(|e| {
                Error::Failed(format!(
                    "Failed to move the dedicated interface '{nic}' into {name}: {e}"
                ))
            })?;
        info!(runtime = name, interface = %nic, "dedicated NIC moved into the runtime");
    }

    op.step(
        "registering",
        "verifying addresses and registering the runtime",
    );
    let info = docker
        .inspect_container(&created.id)
        .await
        .map_err(Error::docker(format!("inspecting container {name}")))?;
    let unhonoured: Vec<usize> = plan.unhonoured_macs.iter().map(|a| a.vnic).collect();
    // What is persisted: the vNICs as received plus the MACs given to those without one.
    let mut persisted = spec.raw_vnics.clone();
    // Requested MACs the engine did not set, by network: netmon sets them once the vNICs are
    // persisted (below); the warning is given for those it could not.
    let mut unset_macs: Vec<(String, String)> = Vec::new();
    for a in &attachments {
        let v = &spec.vnics[a.vnic];
        let ep = info.network_settings.networks.get(&a.network);
        let actual_mac = ep
            .map(|e| e.mac_address.to_ascii_lowercase())
            .unwrap_or_default();
        if let Some(want) = a.mac
            && actual_mac != want.to_string()
        {
            let why = if unhonoured.contains(&a.vnic) {
                format!(
                    " (Docker Engine API {api} honours a MAC address on one network per container \
                     only; per-network MACs need API 1.44)"
                )
            } else {
                String::new()
            };
            let shown = if actual_mac.is_empty() {
                "none"
            } else {
                &actual_mac
            };
            if generated.contains(&a.vnic) {
                // As the original: the MAC the engine reports is the one kept from now on.
                if let (Ok(got), Some(obj)) = (
                    actual_mac.parse::<MacAddr>(),
                    persisted.get_mut(a.vnic).and_then(|o| o.as_object_mut()),
                ) {
                    obj.insert(mac_key(v).to_owned(), got.to_string().into());
                }
                // Nobody asked for a MAC here: no warning, the engine's one is simply kept.
                info!(
                    runtime = name,
                    vnic = a.vnic,
                    "the generated MAC {want} could not be set (Engine API {api}); keeping the \
                     engine's {shown}"
                );
            } else {
                unset_macs.push((
                    a.network.clone(),
                    format!(
                        "vnic_configs[{}] ({}): requested MAC {want} but the engine assigned \
                         {shown}{why}",
                        a.vnic, v.name
                    ),
                ));
            }
        }
        if let Some(want) = a.ip {
            let actual = ep.map(|e| e.ip_address.as_str()).unwrap_or_default();
            if actual != want.to_string() {
                op.warn(format!(
                    "vnic_configs[{}] ({}): requested address {want} but the engine assigned {actual:?}",
                    a.vnic, v.name
                ));
            }
        }
    }
    if let Err(e) = rt.join_internal(name).await {
        op.warn(format!(
            "the agent could not join {}: {e}",
            naming::internal_network_name(name)
        ));
    }
    made.state = true;
    match internal_ip_of(&info, name) {
        Some(ip) => rt.state().set_client(name, &ip.to_string()).await?,
        None => op.warn(format!(
            "Could not retrieve internal IP for container {name}"
        )),
    }
    rt.state().set_stopped(name, false).await?;
    // Before the commit, so a committed runtime never lacks its ports; a new runtime of this
    // name has exactly the ports it asks for (an entry self-destruct left must not apply to it).
    if spec.serial.is_empty() {
        rt.state().forget_serial(name).await?;
    } else {
        rt.state()
            .set_serial_entry(name, super::serial::entry_for(&spec.serial))
            .await?;
    }
    // The commit mark: from here on the runtime is kept whatever happens.
    rt.state().set_vnics(name, persisted).await?;
    if !unset_macs.is_empty() {
        let not_set = super::macfix::ensure(rt, name).await;
        let fixed = rt.fixed_macs().of(name, &info);
        for (network, warning) in unset_macs {
            if !fixed.contains_key(&network) {
                op.warn(warning);
            }
        }
        not_set.into_iter().for_each(|w| op.warn(w));
    }
    if let Err(e) = rt.state().clear_intent(name, None).await {
        // Committed anyway: the boot reconcile sees the vNIC entry and only clears the intent.
        op.warn(format!("could not clear the create intent: {e}"));
    }
    // After the commit (a lease is recorded on the persisted vNIC): a failure is retried, not a
    // reason to remove a runtime that runs.
    if !spec.serial.is_empty() {
        op.step(
            "provisioning_serial_ports",
            format!("making the serial device nodes of {name}"),
        );
        super::serial_nodes::ensure(rt, name)
            .await
            .into_iter()
            .for_each(|w| op.warn(w));
    }
    if spec
        .vnics
        .iter()
        .any(|v| v.mode == Mode::Dhcp && !is_wifi(v))
    {
        op.step("starting_dhcp", format!("starting DHCP for {name}"));
        if let Err(e) = super::dhcp::ensure(rt, name).await {
            op.warn(e);
        }
    }
    if spec.vnics.iter().any(is_wifi) {
        op.step(
            "wifi_bridges",
            format!("building the Wi-Fi proxy-ARP bridges of {name}"),
        );
        super::wifi::ensure(rt, name)
            .await
            .into_iter()
            .for_each(|w| op.warn(w));
    }
    Ok(())
}

/// Gives every vNIC without a MAC one, in the spec and in the persisted objects (under the key style
/// of the request), so it is set at create and kept across restarts, re-creates and engine
/// upgrades (the LAN's DHCP reservations stay valid). A static vNIC gets `02:42:<its IPv4>`, the
/// MAC engines before Docker 28 derive from the address when none is given: the same one an older
/// engine gives it back when a re-home connects it again with its address (connect ignores a
/// requested MAC before API 1.54). Other vNICs get a random locally administered one
/// ([`MacAddr::random_local`]). Before API 1.44 the engine sets a MAC on one network only (the
/// first vNIC with a MAC): there only the first vNIC gets one, and only when no vNIC asked for a
/// MAC, so nothing generated goes unhonoured. Returns the vNICs that got one.
fn give_macs(spec: &mut CreateSpec, per_endpoint_macs: bool) -> Vec<usize> {
    let mut generated = Vec::new();
    let any_requested = spec.vnics.iter().any(|v| v.mac.is_some());
    for (i, v) in spec.vnics.iter_mut().enumerate() {
        // A Wi-Fi vNIC is a veth netmon makes: no endpoint to give a MAC to.
        if is_wifi(v) || v.mac.is_some() || (!per_endpoint_macs && (any_requested || i > 0)) {
            continue;
        }
        let mac = match (v.mode, v.ip) {
            (Mode::Static, Some(ip)) => {
                let [a, b, c, d] = ip.octets();
                MacAddr([0x02, 0x42, a, b, c, d])
            }
            _ => MacAddr::random_local(),
        };
        v.mac = Some(mac);
        if let Some(obj) = spec
            .raw_vnics
            .get_mut(v.index)
            .and_then(|o| o.as_object_mut())
        {
            obj.insert(mac_key(v).to_owned(), mac.to_string().into());
        }
        generated.push(v.index);
    }
    generated
}

/// The key a vNIC's MAC is persisted under: the one it came with, else its form's (`mac_address`
/// in the 3d2c700 form, `mac` in today's).
fn mac_key(v: &VnicSpec) -> &'static str {
    if v.raw.contains_key("mac") {
        "mac"
    } else if v.raw.contains_key("mac_address") || v.generation == Generation::Upstream {
        "mac_address"
    } else {
        "mac"
    }
}

/// Refuses a requested MAC that another container already uses on a MACVLAN network of the same
/// parent (the LAN would see one MAC on two ports). Generated MACs are not requested: they are
/// checked by their randomness, as in the original.
async fn check_macs_free(rt: &Runtimes, vnics: &[VnicSpec]) -> Result<(), Error> {
    let wanted: Vec<&VnicSpec> = vnics.iter().filter(|v| v.mac.is_some()).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let docker = rt.docker();
    let filters = docker_api::Filters::new().driver("macvlan");
    let networks = docker
        .list_networks(&filters)
        .await
        .map_err(Error::docker("listing the MACVLAN networks"))?;
    for n in networks {
        let Some(parent) = n.options.get("parent") else {
            continue;
        };
        let on_parent: Vec<&&VnicSpec> = wanted.iter().filter(|v| &v.parent == parent).collect();
        if on_parent.is_empty() {
            continue;
        }
        // The list does not carry the endpoints; the inspect does.
        let Ok(full) = docker.inspect_network(&n.id).await else {
            continue;
        };
        for c in full.containers.values() {
            let Ok(used) = c.mac_address.parse::<MacAddr>() else {
                continue;
            };
            if let Some(v) = on_parent.iter().find(|v| v.mac == Some(used)) {
                return Err(spec::SpecError {
                    field: format!("vnic_configs[{}].{}", v.index, mac_key(v)),
                    message: format!(
                        "MAC {used} is already used by container {} on parent interface {parent}",
                        c.name
                    ),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// Creates the container (the twin-network and leftover retries included) and connects the
/// networks the create body could not carry. Records the container in `made` for the rollback.
async fn create_and_connect(
    rt: &Runtimes,
    name: &str,
    plan: &body::CreatePlan,
    internal_id: &str,
    create_id: &str,
    op: &OpHandle,
    made: &mut Made,
) -> Result<docker_api::ContainerCreated, Error> {
    let docker = rt.docker();
    // Twice at most: a request of the killed previous process that the engine completed late can
    // leave a twin internal network or a leftover container of an undone create in the way.
    let mut attempt = 0;
    let created = loop {
        attempt += 1;
        let e = match docker.create_container(name, &plan.create).await {
            Ok(created) => break created,
            Err(e) => e,
        };
        if attempt == 1 && e.is_ambiguous() {
            macvlan::dedupe_internal(rt, name, Some(internal_id)).await?;
            continue;
        }
        if e.is_conflict() {
            match docker.inspect_container(name).await {
                Ok(c) if attempt == 1 && rt.is_aborted_leftover(&c).await => {
                    super::kill_and_remove(rt, &c.id)
                        .await
                        .map_err(Error::docker(format!(
                            "removing the leftover container {name}"
                        )))?;
                    continue;
                }
                _ => {
                    return Err(Error::Failed(format!(
                        "Container name {name} is already in use"
                    )));
                }
            }
        }
        // A timeout or a dropped connection does not mean the engine made nothing: adopt what it
        // made for this create so the rollback removes it.
        if let Ok(c) = docker.inspect_container(name).await
            && c.short_name() == name
            && c.config
                .labels
                .get(naming::LABEL_CREATE_ID)
                .map(String::as_str)
                == Some(create_id)
            && naming::is_ours(&c.config.labels, rt.instance())
        {
            made.container = Some(c.id);
        }
        return Err(Error::docker(format!("creating container {name}"))(e));
    };
    made.container = Some(created.id.clone());
    for w in created.warnings.iter().filter(|w| !w.is_empty()) {
        op.warn(format!("engine warning on create: {w}"));
    }
    for (net, endpoint) in &plan.connect {
        // By id: the name may have a twin (see `macvlan::dedupe_internal`).
        let target = if *net == naming::internal_network_name(name) {
            internal_id
        } else {
            net.as_str()
        };
        docker
            .connect_network(target, &created.id, endpoint)
            .await
            .map_err(Error::docker(format!("connecting {name} to {net}")))?;
    }
    Ok(created)
}

/// Starts the container, once more after dropping a twin of its internal network.
async fn start(
    rt: &Runtimes,
    name: &str,
    id: &str,
    internal_id: &str,
) -> Result<(), docker_api::Error> {
    let docker = rt.docker();
    match docker.start_container(id).await {
        Err(e) if e.is_ambiguous() => {
            // A twin of the internal network, made by a create of the killed previous process
            // that the engine completed late: drop it and start again.
            if let Err(err) = macvlan::dedupe_internal(rt, name, Some(internal_id)).await {
                warn!(runtime = name, error = %err, "cannot remove the twin internal network");
                return Err(e);
            }
            docker.start_container(id).await
        }
        r => r,
    }
}

/// The parent's subnet and gateway from netmon's cache, waiting for it up to the configured time.
async fn subnet_from_netmon(
    rt: &Runtimes,
    parent: &str,
    gateway_given: Option<Ipv4Addr>,
) -> Result<(Ipv4Net, Option<Ipv4Addr>), Error> {
    let missing = || {
        Error::Failed(format!(
            "Could not detect subnet for interface {parent}. Please provide parent_subnet and \
             parent_gateway in the configuration."
        ))
    };
    let info = rt
        .interfaces()
        .wait_for(parent, rt.config().subnet_wait)
        .await
        .ok_or_else(missing)?;
    let subnet = info
        .subnet()
        .and_then(|s| s.parse::<Ipv4Net>().ok())
        .ok_or_else(missing)?
        .network();
    let gateway = gateway_given.or_else(|| {
        info.gateway
            .as_deref()
            .and_then(|g| g.parse::<Ipv4Addr>().ok())
            .filter(|g| subnet.contains(*g))
    });
    Ok((subnet, gateway))
}

/// Undoes what a failed create made. Every step is attempted; failures are logged.
async fn rollback(rt: &Runtimes, name: &str, made: &Made) {
    let docker = rt.docker();
    if made.dedicated {
        // Back before the container goes: a virtual link would go with its namespace.
        let container = match &made.container {
            Some(id) => docker.inspect_container(id).await.ok(),
            None => None,
        };
        for w in super::dedicated::release(rt, name, container.as_ref()).await {
            warn!(runtime = name, "rollback: {w}");
        }
    }
    if let Some(id) = &made.container {
        let opts = RemoveContainerOptions {
            force: true,
            volumes: true,
        };
        if let Err(e) = docker.remove_container(id, opts).await
            && !e.is_not_found()
        {
            warn!(runtime = name, error = %e, "rollback: cannot remove the container");
        }
    }
    if made.state {
        if let Err(e) = rt.state().forget(name).await {
            warn!(runtime = name, error = %e, "rollback: cannot clean the state files");
        }
        // Written by this create before its commit (a runtime that never was has no ports).
        if let Err(e) = rt.state().forget_serial(name).await {
            warn!(runtime = name, error = %e, "rollback: cannot remove its serial entry");
        }
    }
    if made.internal_network
        && let Err(e) = macvlan::remove_internal(rt, name, false).await
    {
        warn!(runtime = name, error = %e, "rollback: cannot remove the internal network");
    }
    let _guard = rt.network_lock().await;
    for n in &made.macvlans {
        if let Err(e) = macvlan::remove_if_unused(rt, n).await {
            warn!(runtime = name, network = %n, error = %e, "rollback: cannot remove the MACVLAN network");
        }
    }
}
