//! The line-oriented console: one command per input line, one JSON object per output line.
//!
//! Input grammar (everything after the topic is a sequence of JSON values, one per Socket.IO argument):
//!
//! ```text
//! get_device_status {"correlation_id":1,"device_id":"plc1"}
//! run_command "plc1" {"method":"GET","api":"status"}
//! @devcloud-agent-001 start_device {"correlation_id":2,"device_id":"plc1"}   # pick the agent by CN
//! !delete_orchestrator {"correlation_id":3}                                 # emit without ack
//! agents                                                                    # list connected CNs
//! ```
//!
//! Output lines (stdout) are JSON objects: agent events `{"cn","event","args"}`, connections
//! `{"cn","connected":true,"sid"}` / `{"cn","connected":false,"sid","reason"}`, acks
//! `{"cn","ack":"<topic>","args":[…]}` and failures `{"error":"…"}`. This module parses and formats;
//! the only I/O it does is reading the given input and sending to the given output channel.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::server::{CloudEvent, DevCloud};

/// One parsed console line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Nothing to do (blank line or comment).
    Nothing,
    /// List connected agents.
    Agents,
    /// Print the grammar.
    Help,
    /// Send `topic` with `args` to `agent` (None = most recent), waiting for the ack if `ack`.
    Emit {
        agent: Option<String>,
        topic: String,
        args: Vec<Value>,
        ack: bool,
    },
}

/// Help text for the console.
pub const HELP: &str = "commands: `[@CN] [!]<topic> [json args...]` (! = no ack), `agents`, `help`";

/// Parses one console line.
pub fn parse_line(line: &str) -> Result<Command> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Command::Nothing);
    }
    let (mut word, mut rest) = split_word(line);
    let mut agent = None;
    if let Some(cn) = word.strip_prefix('@') {
        if cn.is_empty() {
            return Err(Error::BadRequest("`@` needs an agent CN".into()));
        }
        agent = Some(cn.to_owned());
        (word, rest) = split_word(rest);
    }
    if agent.is_none() && rest.is_empty() {
        match word {
            "agents" => return Ok(Command::Agents),
            "help" | "?" => return Ok(Command::Help),
            _ => {}
        }
    }
    let (topic, ack) = match word.strip_prefix('!') {
        Some(t) => (t, false),
        None => (word, true),
    };
    if topic.is_empty() {
        return Err(Error::BadRequest("missing topic".into()));
    }
    if topic.starts_with(['{', '[', '"']) {
        return Err(Error::BadRequest(format!(
            "expected a topic name before the JSON arguments, got {topic:?}"
        )));
    }
    Ok(Command::Emit {
        agent,
        topic: topic.to_owned(),
        args: parse_json_values(rest)?,
        ack,
    })
}

/// Parses a whitespace-separated sequence of JSON values (`"plc1" {"method":"GET"} 3`).
pub fn parse_json_values(text: &str) -> Result<Vec<Value>> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::BadRequest(format!("arguments are not JSON values: {e}")))
}

fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// The stdout line for a server notification.
pub fn event_line(ev: &CloudEvent) -> String {
    let v = match ev {
        CloudEvent::Connected { cn, sid } => json!({"cn": cn, "connected": true, "sid": sid}),
        CloudEvent::Disconnected { cn, sid, reason } => {
            json!({"cn": cn, "connected": false, "sid": sid, "reason": reason})
        }
        CloudEvent::Event(e) => json!({"cn": e.agent_cn, "event": e.name, "args": e.args}),
    };
    v.to_string()
}

/// The stdout line for an error.
pub fn error_line(e: &Error) -> String {
    json!({"error": e.to_string()}).to_string()
}

/// Runs one command against `cloud`; the result line goes to `out`.
pub async fn execute(
    cloud: &DevCloud,
    cmd: Command,
    timeout: Duration,
    out: &mpsc::Sender<String>,
) {
    let line = match cmd {
        Command::Nothing => return,
        Command::Help => json!({"help": HELP}).to_string(),
        Command::Agents => json!({"agents": cloud.connected_agents()}).to_string(),
        Command::Emit {
            agent,
            topic,
            args,
            ack,
        } => {
            // Resolve the CN first so the answer says which agent it came from.
            let result = match cloud.resolve_agent(agent.as_deref()) {
                Err(e) => Err(e),
                Ok(cn) if ack => cloud
                    .emit_with_ack(Some(&cn), &topic, args, timeout)
                    .await
                    .map(|values| json!({"cn": cn, "ack": topic, "args": values})),
                Ok(cn) => cloud
                    .emit(Some(&cn), &topic, args)
                    .map(|()| json!({"cn": cn, "emitted": topic})),
            };
            match result {
                Ok(v) => v.to_string(),
                Err(e) => json!({"error": e.to_string(), "topic": topic}).to_string(),
            }
        }
    };
    let _ = out.send(line).await;
}

/// Reads commands from `input` until EOF; each runs concurrently (a slow ack does not block the next
/// line). Returns when the input ends and every started command has answered.
pub async fn run<R: AsyncBufRead + Unpin>(
    cloud: DevCloud,
    input: R,
    timeout: Duration,
    out: mpsc::Sender<String>,
) {
    let mut lines = input.lines();
    let mut running = tokio::task::JoinSet::new();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("console input: {e}");
                break;
            }
        };
        while running.try_join_next().is_some() {}
        match parse_line(&line) {
            Ok(cmd) => {
                let cloud = cloud.clone();
                let out = out.clone();
                running.spawn(async move { execute(&cloud, cmd, timeout, &out).await });
            }
            Err(e) => {
                let _ = out.send(error_line(&e)).await;
            }
        }
    }
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_topic_with_one_and_two_json_arguments() {
        assert_eq!(
            parse_line(r#"get_device_status {"correlation_id":1}"#).expect("parse"),
            Command::Emit {
                agent: None,
                topic: "get_device_status".into(),
                args: vec![json!({"correlation_id": 1})],
                ack: true
            }
        );
        assert_eq!(
            parse_line(r#"run_command "plc1"   {"method":"GET","api":"status"}"#).expect("parse"),
            Command::Emit {
                agent: None,
                topic: "run_command".into(),
                args: vec![json!("plc1"), json!({"method": "GET", "api": "status"})],
                ack: true
            }
        );
    }

    #[test]
    fn parses_agent_selector_no_ack_and_builtins() {
        assert_eq!(
            parse_line("@dev-1 !ping 1 [2] null").expect("parse"),
            Command::Emit {
                agent: Some("dev-1".into()),
                topic: "ping".into(),
                args: vec![json!(1), json!([2]), Value::Null],
                ack: false
            }
        );
        assert_eq!(parse_line("  ").expect("blank"), Command::Nothing);
        assert_eq!(parse_line("# note").expect("comment"), Command::Nothing);
        assert_eq!(parse_line("agents").expect("agents"), Command::Agents);
        assert_eq!(parse_line("help").expect("help"), Command::Help);
        assert!(matches!(
            parse_line("agents {}").expect("topic named agents"),
            Command::Emit { .. }
        ));
    }

    #[test]
    fn refuses_bad_json_and_missing_topic() {
        assert!(parse_line("topic {bad").is_err_and(|e| e.is_bad_request()));
        assert!(parse_line(r#"{"a":1}"#).is_err_and(|e| e.is_bad_request()));
        assert!(parse_line("@ topic").is_err_and(|e| e.is_bad_request()));
        assert!(parse_line("! {}").is_err_and(|e| e.is_bad_request()));
    }
}
