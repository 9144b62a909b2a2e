//! The forever loop: get the credentials (cached, see `credentials`), connect, run the session,
//! back off (see [`super::backoff`]), repeat.
//!
//! Nothing here gives up: a missing certificate, an unreachable or misconfigured cloud and TLS
//! failures are logged and retried. A failure is logged clearly the first time (WARN); the same
//! failure repeating is logged at DEBUG with a WARN reminder every few minutes, so an agent
//! waiting days for its certificate does not wear out the SD card.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::backoff::{Backoff, random_unit};
use super::credentials::Credentials;
use super::session::{Connected, SessionEnd, run_session};
use super::tls::Endpoint;
use super::{Error, Handler, LinkConfig};

/// A repeated failure is logged at WARN again after this long.
const REMIND_EVERY: Duration = Duration::from_secs(300);

/// Runs the cloud link until `shutdown` completes. Returns an error only for a malformed
/// `--server` URL; everything else is retried forever.
pub async fn run<F>(config: LinkConfig, handler: Arc<dyn Handler>, shutdown: F) -> Result<(), Error>
where
    F: Future<Output = ()>,
{
    let endpoint = Endpoint::parse(&config.server)?;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Backoff::new();
    let mut reporter = Reporter::default();
    // One TLS configuration (and so one session cache) for as long as the files stay the same.
    let mut credentials = Credentials::new(&config);
    info!("cloud link starting: {}", endpoint.ws_url);
    loop {
        let mut connected: Option<Connected> = None;
        let attempt = async {
            let current = credentials.current().await?;
            let renew = credentials.replacement_ready();
            run_session(
                &endpoint,
                current,
                &handler,
                &mut shutdown,
                renew,
                &mut connected,
                &config.status,
            )
            .await
        };
        let outcome = attempt.await;
        config.status.set_down();
        match outcome {
            Ok(SessionEnd::Shutdown) => {
                info!("cloud link stopped");
                return Ok(());
            }
            Ok(SessionEnd::Renew) => {
                // At once: the cloud just saw this device, and the new pair verified.
                info!("the client certificate or key was renewed on disk: reconnecting to use it");
                backoff.connection_ended(true, Duration::MAX);
                reporter.clear();
            }
            Ok(SessionEnd::Lost { reason }) => {
                let lasted = connected.map_or(Duration::ZERO, |c| c.since.elapsed());
                backoff.connection_ended(true, lasted);
                reporter.clear();
                let delay = backoff.next_delay(random_unit());
                warn!(
                    "disconnected from {}: {reason}; retrying in {:.1} s",
                    endpoint.ws_url,
                    delay.as_secs_f64()
                );
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return Ok(());
                }
            }
            Err(e) => {
                config.status.attempt_failed();
                let delay = backoff.next_delay(random_unit());
                reporter.report(&e, &endpoint, delay);
                if sleep_or_shutdown(delay, &mut shutdown).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Sleeps `delay`; true when shutdown came first.
async fn sleep_or_shutdown<F: Future<Output = ()>>(
    delay: Duration,
    shutdown: &mut std::pin::Pin<&mut F>,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = shutdown.as_mut() => { info!("cloud link stopped"); true }
    }
}

/// Rate-limits repeated identical failures.
#[derive(Default)]
struct Reporter {
    last: Option<(String, Instant)>,
}

impl Reporter {
    fn report(&mut self, e: &Error, endpoint: &Endpoint, delay: Duration) {
        let text = e.to_string();
        let repeat =
            matches!(&self.last, Some((prev, at)) if *prev == text && at.elapsed() < REMIND_EVERY);
        let line = format!(
            "cannot connect to {}: {text}; retrying in {:.1} s",
            endpoint.ws_url,
            delay.as_secs_f64()
        );
        if repeat {
            debug!("{line}");
        } else {
            warn!("{line} (repeats of this failure are logged at DEBUG)");
            self.last = Some((text, Instant::now()));
        }
    }

    fn clear(&mut self) {
        self.last = None;
    }
}
