//! `create_new_runtime` (upstream §2.1, §12 item 8, upstream-head §9.1): today's contract (both
//! vNIC field generations, spec README §1; an empty vNIC list is a runtime on its internal
//! network only; serial ports, upstream-head §7.1), then the runtime's complete validation into a
//! [`CreateSpec`], all before anything is asked of the engine. Answered `{status: "creating",
//! container_id, message}` (plus `serial_configs_count` when it has serial ports) once the runtime
//! service accepted it; the work goes on in the background and is reported by
//! `get_device_status`.

use serde_json::{Map, Value, json};

use super::contract::{
    self, BaseMessage, ContractError, Field, Kind, opt, opt_string, req, single_object, string,
};
use super::{Services, Topic, answer};
use crate::runtime::serial;
use crate::runtime::spec::{self, CreateSpec};

/// One vNIC. Both field generations are accepted (spec README §1): 3d2c700's `ip_address`,
/// `mac_address`, `subnet` CIDR, `parent_subnet`, `parent_gateway`, `network_mode`
/// `manual`|`dhcp`, and the production cloud's `ip`, `mac`, `subnet` netmask, `network_mode`
/// `static`|`dhcp`. Types and presence here; what the values mean is [`crate::runtime::vnic`]'s.
pub const VNIC: &[Field] = &[
    req("name", Kind::Str),
    req("parent_interface", Kind::InterfaceName),
    opt("parent_subnet", Kind::Str),
    opt("parent_gateway", Kind::Str),
    req("network_mode", Kind::Str),
    opt("ip_address", Kind::Str),
    opt("ip", Kind::Str),
    opt("subnet", Kind::Str),
    opt("gateway", Kind::Str),
    opt("dns", Kind::List(&Kind::Str)),
    opt("mac_address", Kind::Str),
    opt("mac", Kind::Str),
];

/// One serial port (upstream-head §7.1). Types here; what the values may be is
/// [`crate::runtime::serial`]'s. `baud_rate` is accepted and unused, as in the original.
pub const SERIAL: &[Field] = &[
    req("name", Kind::Str),
    req("device_id", Kind::Str),
    req("container_path", Kind::Str),
    opt("baud_rate", Kind::Number),
];

/// `create_new_runtime` (upstream §2.1, §12 item 8).
pub const CONTRACT: &[Field] = &[
    opt("correlation_id", Kind::Number),
    opt("action", Kind::Str),
    opt("requested_at", Kind::Date),
    req("container_name", Kind::NonEmptyStr),
    req("vnic_configs", Kind::List(&Kind::Object(VNIC))),
    opt("serial_configs", Kind::List(&Kind::Object(SERIAL))),
    opt("runtime_version", Kind::Str),
    opt("dedicated_interface", Kind::InterfaceName),
];

/// A validated `create_new_runtime`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateNewRuntime {
    pub base: BaseMessage,
    /// The runtime to create, validated completely.
    pub spec: CreateSpec,
}

impl CreateNewRuntime {
    /// Parses the message object.
    pub fn parse_object(map: &Map<String, Value>) -> Result<Self, ContractError> {
        contract::check(CONTRACT, map)?;
        let container_name = string(map, "container_name");
        let vnic_configs: Vec<Map<String, Value>> = map
            .get("vnic_configs")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_object).cloned().collect())
            .unwrap_or_default();
        let serial_configs: Vec<Map<String, Value>> = map
            .get("serial_configs")
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_object).cloned().collect())
            .unwrap_or_default();
        let runtime_version = opt_string(map, "runtime_version");
        let mut spec =
            spec::parse_create(&container_name, &vnic_configs, runtime_version.as_deref())
                .map_err(|e| ContractError::Invalid {
                    field: e.field,
                    message: e.message,
                })?;
        spec.dedicated_interface = opt_string(map, "dedicated_interface");
        spec.serial =
            serial::parse_configs(&serial_configs).map_err(|e| ContractError::Invalid {
                field: e.field,
                message: e.message,
            })?;
        Ok(Self {
            base: BaseMessage::from_checked(map),
            spec,
        })
    }
}

impl Topic for CreateNewRuntime {
    const NAME: &'static str = "create_new_runtime";

    fn parse(args: &[Value]) -> Result<Self, ContractError> {
        Self::parse_object(single_object(args)?)
    }

    fn device(&self) -> Option<&str> {
        Some(&self.spec.name)
    }

    async fn apply(self, services: &Services) -> Value {
        let name = self.spec.name.clone();
        let serial_ports = self.spec.serial.len();
        tracing::info!(vnics = self.spec.vnics.len(), serial_ports, version = ?self.spec.runtime_version, "create requested");
        let result = services.runtime.create(self.spec).await.map(|()| {
            let mut body = Map::new();
            body.insert("status".into(), json!("creating"));
            body.insert("container_id".into(), json!(name));
            body.insert(
                "message".into(),
                json!(format!("Container creation started for {name}")),
            );
            if serial_ports > 0 {
                body.insert("serial_configs_count".into(), json!(serial_ports));
            }
            body
        });
        answer(Self::NAME, &self.base.correlation_id, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::vnic::Mode;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            other => panic!("test data must be an object, got {other}"),
        }
    }

    fn vnic_3d2c700() -> Value {
        json!({
            "name": "eth0", "parent_interface": "ens37", "parent_subnet": "192.168.1.0/24",
            "parent_gateway": "192.168.1.1", "network_mode": "manual", "ip_address": "192.168.1.50",
            "subnet": "192.168.1.0/24", "gateway": "192.168.1.1", "dns": ["8.8.8.8"],
            "mac_address": "02:42:ac:11:00:02"
        })
    }

    fn vnic_production() -> Value {
        json!({
            "name": "eth0", "parent_interface": "eth1", "network_mode": "static", "ip": "10.204.0.5",
            "subnet": "255.255.255.0", "gateway": "10.204.0.1", "dns": ["1.1.1.1"],
            "mac": "02:00:00:00:00:01", "extra_key": {"kept": true}
        })
    }

    fn create() -> Value {
        json!({
            "correlation_id": 42, "container_name": "plc1",
            "vnic_configs": [vnic_3d2c700(), vnic_production()],
            "action": "create_new_runtime", "requested_at": "2025-11-20T20:30:45.123Z"
        })
    }

    fn err(contract_result: Result<impl std::fmt::Debug, ContractError>) -> String {
        contract_result
            .expect_err("expected a contract error")
            .to_string()
    }

    fn parse(m: &Map<String, Value>) -> Result<CreateNewRuntime, ContractError> {
        CreateNewRuntime::parse_object(m)
    }

    #[test]
    fn create_accepts_both_vnic_generations_and_keeps_them_verbatim() {
        let req = parse(&obj(create())).unwrap();
        assert_eq!(req.base.correlation_id, json!(42));
        assert_eq!(req.spec.name, "plc1");
        assert_eq!(req.spec.raw_vnics[1], vnic_production());
        let vnics = &req.spec.vnics;
        assert_eq!(vnics[0].mode, Mode::Static);
        assert_eq!(vnics[0].ip, Some("192.168.1.50".parse().unwrap()));
        assert_eq!(
            vnics[0].mac.map(|m| m.to_string()).as_deref(),
            Some("02:42:ac:11:00:02")
        );
        assert_eq!(
            vnics[0].parent_subnet,
            Some("192.168.1.0/24".parse().unwrap())
        );
        assert_eq!(vnics[1].mode, Mode::Static);
        assert_eq!(vnics[1].ip, Some("10.204.0.5".parse().unwrap()));
        assert_eq!(
            vnics[1].mac.map(|m| m.to_string()).as_deref(),
            Some("02:00:00:00:00:01")
        );
        assert_eq!(vnics[1].subnet, Some("10.204.0.0/24".parse().unwrap()));
        assert_eq!(
            vnics[1].dns,
            vec!["1.1.1.1".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn create_reports_each_missing_required_field_in_contract_order() {
        for key in ["container_name", "vnic_configs"] {
            let mut m = obj(create());
            m.remove(key);
            assert_eq!(
                err(parse(&m)),
                format!("Missing required field: 'Missing key: {key}'")
            );
        }
        let mut m = obj(create());
        m.remove("vnic_configs");
        m.remove("container_name");
        assert_eq!(
            err(parse(&m)),
            "Missing required field: 'Missing key: container_name'"
        );
    }

    #[test]
    fn base_message_fields_are_optional_and_come_first() {
        let mut m = obj(create());
        m.remove("correlation_id");
        m.remove("action");
        m.remove("requested_at");
        let req = parse(&m).unwrap();
        assert_eq!(req.base.correlation_id, Value::Null);
        // A bad BASE field is named before a topic field that is also bad (H §1.2 order).
        let mut m = obj(create());
        m.insert("correlation_id".into(), json!("abc"));
        m.remove("container_name");
        assert_eq!(
            err(parse(&m)),
            "Invalid field type: Value must be a number. (field: correlation_id)"
        );
    }

    #[test]
    fn create_reports_each_wrong_type() {
        for (key, value, message) in [
            ("correlation_id", json!("42"), "Value must be a number."),
            ("correlation_id", json!(true), "Value must be a number."),
            (
                "container_name",
                json!(1),
                "Value must be a non-empty string.",
            ),
            ("vnic_configs", json!({}), "Value must be a list."),
            ("runtime_version", json!(2), "Value must be a string."),
            (
                "requested_at",
                json!("yesterday"),
                "Value must be a valid ISO datetime string.",
            ),
            ("action", json!(7), "Value must be a string."),
        ] {
            let mut m = obj(create());
            m.insert(key.into(), value);
            assert_eq!(
                err(parse(&m)),
                format!("Invalid field type: {message} (field: {key})")
            );
        }
    }

    #[test]
    fn nested_vnic_errors_name_the_path() {
        let mut bad = vnic_production();
        bad["parent_interface"] = json!(5);
        let m = obj(
            json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [vnic_3d2c700(), bad]}),
        );
        assert_eq!(
            err(parse(&m)),
            "Invalid field type: Value must be an interface name \
             (1 to 15 characters from A-Z, a-z, 0-9, '_', '.', '-'). (field: vnic_configs[1].parent_interface)"
        );
        let mut missing = vnic_production();
        missing.as_object_mut().unwrap().remove("network_mode");
        let m = obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [missing]}));
        assert_eq!(
            err(parse(&m)),
            "Missing required field: 'Missing key: vnic_configs[0].network_mode'"
        );
        let mut dns = vnic_3d2c700();
        dns["dns"] = json!(["8.8.8.8", 8]);
        let m = obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [dns]}));
        assert_eq!(
            err(parse(&m)),
            "Invalid field type: Value must be a string. (field: vnic_configs[0].dns[1])"
        );
        for (element, got) in [
            (json!(5), "5"),
            (json!(null), "null"),
            (json!([1]), "[1]"),
            (json!("name"), "\"name\""),
        ] {
            let m =
                obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [element]}));
            assert_eq!(
                err(parse(&m)),
                "Invalid field type: Value must be an object. (field: vnic_configs[0])",
                "element {got}"
            );
        }
    }

    #[test]
    fn vnic_interface_names_longer_than_15_or_with_odd_characters_are_refused() {
        for name in ["", "a234567890123456", "eth 0", "eth0/1", "ét0"] {
            let mut v = vnic_production();
            v["parent_interface"] = json!(name);
            let m = obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [v]}));
            assert!(err(parse(&m)).ends_with("(field: vnic_configs[0].parent_interface)"));
        }
    }

    #[test]
    fn a_blank_container_name_gets_todays_text() {
        let mut m = obj(create());
        m.insert("container_name".into(), json!("   "));
        assert_eq!(
            err(parse(&m)),
            "Invalid field type: Value must be a non-empty string. (field: container_name)"
        );
    }

    #[test]
    fn a_runtime_without_vnics_is_accepted() {
        let mut m = obj(create());
        m.insert("vnic_configs".into(), json!([]));
        let req = parse(&m).unwrap();
        assert!(req.spec.vnics.is_empty());
    }

    #[test]
    fn serial_configs_are_validated_and_reach_the_runtime() {
        let port = json!({"name": "modbus", "device_id": "ttyS0", "container_path": "/dev/modbus0",
                          "baud_rate": 9600});
        let mut m = obj(create());
        m.insert("serial_configs".into(), json!([port]));
        let req = parse(&m).unwrap();
        assert_eq!(req.spec.serial.len(), 1);
        assert_eq!(req.spec.serial[0].container_path, "/dev/modbus0");
        for (value, needle) in [
            (
                json!("x"),
                "Invalid field type: Value must be a list. (field: serial_configs)",
            ),
            (
                json!([5]),
                "Value must be an object. (field: serial_configs[0])",
            ),
            (
                json!([{"name": "a", "device_id": "ttyS0"}]),
                "Missing required field: 'Missing key: serial_configs[0].container_path'",
            ),
            (
                json!([{"name": "a", "device_id": 1, "container_path": "/dev/a"}]),
                "Value must be a string. (field: serial_configs[0].device_id)",
            ),
            (
                json!([{"name": "a", "device_id": "ttyS0", "container_path": "/dev/a", "baud_rate": "fast"}]),
                "Value must be a number. (field: serial_configs[0].baud_rate)",
            ),
            (
                json!([{"name": "a", "device_id": "ttyS0", "container_path": "/etc/shadow"}]),
                "Invalid serial_configs[0].container_path: ",
            ),
            (
                json!([{"name": "a", "device_id": "ttyS0", "container_path": "/dev/../etc/x"}]),
                "Invalid serial_configs[0].container_path: ",
            ),
            (
                json!([{"name": "", "device_id": "ttyS0", "container_path": "/dev/a"}]),
                "Invalid serial_configs[0].name: ",
            ),
            (
                json!([{"name": "a", "device_id": "tty S0", "container_path": "/dev/a"}]),
                "Invalid serial_configs[0].device_id: ",
            ),
            (
                json!([port, {"name": "modbus", "device_id": "ttyS1", "container_path": "/dev/b"}]),
                "Invalid serial_configs[1].name: ",
            ),
        ] {
            let mut m = obj(create());
            m.insert("serial_configs".into(), value.clone());
            let e = err(parse(&m));
            assert!(e.contains(needle), "{value}: {e}");
        }
        // They ask for nothing: accepted.
        for value in [json!([]), json!(null)] {
            let mut m = obj(create());
            m.insert("serial_configs".into(), value);
            assert!(parse(&m).unwrap().spec.serial.is_empty());
        }
    }

    #[test]
    fn a_dedicated_interface_must_be_an_interface_name_and_reaches_the_runtime() {
        let mut m = obj(create());
        m.insert("dedicated_interface".into(), json!("a b"));
        assert!(err(parse(&m)).contains("Value must be an interface name"));
        for value in [json!(null), json!("eth2")] {
            let mut m = obj(create());
            m.insert("dedicated_interface".into(), value.clone());
            let parsed = parse(&m).unwrap();
            assert_eq!(parsed.spec.dedicated_interface.as_deref(), value.as_str());
        }
    }

    #[test]
    fn values_the_runtime_refuses_are_refused_here_naming_the_field() {
        let mut v = vnic_production();
        v["ip"] = json!("10.9.9.9");
        let m = obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [v]}));
        let e = parse(&m).unwrap_err();
        assert_eq!(e.path(), Some("vnic_configs[0].ip"));
        assert!(
            e.to_string().starts_with("Invalid vnic_configs[0].ip: "),
            "{e}"
        );
        let mut m = obj(create());
        m.insert("container_name".into(), json!("bad name"));
        assert_eq!(parse(&m).unwrap_err().path(), Some("container_name"));
    }

    #[test]
    fn optional_vnic_fields_accept_null() {
        let v = json!({"name": "n", "parent_interface": "eth0", "network_mode": "dhcp", "ip": null,
                       "mac_address": null, "dns": null, "parent_subnet": null});
        let m = obj(json!({"correlation_id": 1, "container_name": "p", "vnic_configs": [v]}));
        let req = parse(&m).unwrap();
        let spec = &req.spec.vnics[0];
        assert_eq!(spec.mode, Mode::Dhcp);
        assert_eq!((spec.ip, spec.mac, spec.dns.len()), (None, None, 0));
    }
}
