//! Starting, stopping and restarting owned runtimes ([`Runtimes::power`]): act on the container, remember
//! a requested stop (so the boot reconcile leaves it stopped), refresh the registry after a start.
//! Before a stop the runtime gets the restart policy `unless-stopped` if it has another one (adopted
//! from the Python agent, which used `always`), so the engine does not restart it at the next boot.
//! Answers with the warnings of a success, or the error.

use tracing::warn;

use super::{Error, OpKind, Runtimes};
use crate::state::Intent;

/// The three power actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Start,
    Stop,
    Restart,
}

impl Power {
    fn verb(self) -> &'static str {
        match self {
            Power::Start => "start",
            Power::Stop => "stop",
            Power::Restart => "restart",
        }
    }

    fn kind(self) -> OpKind {
        match self {
            Power::Start => OpKind::Start,
            Power::Stop => OpKind::Stop,
            Power::Restart => OpKind::Restart,
        }
    }
}

impl Runtimes {
    /// Performs `power` on the owned runtime `name` and waits for the engine; `Ok` with the
    /// warnings of a success (e.g. the internal IP could not be refreshed).
    pub async fn power(&self, name: &str, power: Power) -> Result<Vec<String>, Error> {
        apply(self, name, power).await
    }
}

async fn apply(rt: &Runtimes, name: &str, power: Power) -> Result<Vec<String>, Error> {
    if let Some(kind) = rt.ops().running(name) {
        return Err(super::Busy {
            name: name.to_owned(),
            kind,
        }
        .into());
    }
    let owned = rt.owned(name, power.verb()).await?;
    let Some(container) = owned.container else {
        return Err(Error::NotFound(name.to_owned()));
    };
    let op = rt.ops().try_begin(name, power.kind())?;
    if power != Power::Start {
        // The runtime's web server goes away: its debug session ends now, not at the next command.
        rt.debug_sessions().close(name).await;
    }
    let docker = rt.docker();
    let grace = rt.config().stop_grace;
    if power == Power::Stop {
        super::reconcile::ensure_unless_stopped(rt, &container, &op).await;
    }
    // The wanted state is durable before the engine is asked (a crash in between leaves what was
    // asked for, which the boot reconcile then brings about): the stopped set for a stop or start,
    // an intent for a restart.
    let was_stopped = rt.state().is_stopped(name).await;
    let recorded = match power {
        Power::Restart => {
            let intent = Intent::Restart {
                started_at: crate::timefmt::now_utc_micros(),
            };
            match rt.state().set_stopped(name, false).await {
                Ok(()) => rt.state().set_intent(name, intent).await,
                Err(e) => Err(e),
            }
        }
        Power::Start | Power::Stop => rt.state().set_stopped(name, power == Power::Stop).await,
    };
    if let Err(e) = recorded {
        let e = Error::from(e);
        op.fail(format!("cannot record the {}: {e}", power.verb()));
        return Err(e);
    }
    if power != Power::Start
        && let Err(e) = super::dedicated::take_back(rt, name, &container).await
    {
        // The stop goes ahead: a physical port comes back by itself.
        op.warn(e);
    }
    if power != Power::Start {
        // Released while the vNIC is still there; a restart leases again once it runs.
        for w in super::host_side::before_stop(rt, name).await {
            op.warn(w);
        }
    }
    if power == Power::Start {
        // A person decided to try again: a crash loop's count starts over.
        rt.watchdog().reset(name);
    }
    let result = match power {
        Power::Start => docker.start_container(&container.id).await,
        Power::Stop => docker.stop_container(&container.id, grace).await,
        Power::Restart => docker.restart_container(&container.id, grace).await,
    };
    let cleared = match power {
        Power::Restart => rt.state().clear_intent(name, None).await,
        Power::Start | Power::Stop => Ok(()),
    };
    if let Err(e) = result {
        // Nothing changed in the engine: the recorded wish goes back to what it was, so the next
        // start does not act on a request the cloud was told failed.
        if let Err(w) = rt.state().set_stopped(name, was_stopped).await {
            warn!(runtime = name, error = %w, "cannot restore the requested state");
        }
        let e = Error::docker(format!("cannot {} {name}", power.verb()))(e);
        op.fail(e.to_string());
        return Err(e);
    }
    if let Err(e) = cleared {
        warn!(runtime = name, error = %e, "cannot clear the restart intent");
    }
    if power != Power::Stop {
        if let Err(e) = rt.join_internal(name).await {
            op.warn(e.to_string());
        }
        if let Err(e) = rt.refresh_registry(name).await {
            op.warn(format!("could not refresh the internal IP: {e}"));
        }
        for w in super::host_side::after_start(rt, name).await {
            op.warn(w);
        }
    }
    let warnings = op.warnings();
    op.succeed(format!("{name}: {} done", power.verb()));
    Ok(warnings)
}
