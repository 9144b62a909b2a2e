//! Argument lists as socketioxide's parser wants them.
//!
//! socketioxide spreads a *tuple-like* value into separate Socket.IO arguments
//! (`42["topic",a1,a2]`) and treats anything else, a `Vec` included, as one argument. On receive, a
//! tuple-like target type gets every argument while any other type gets only the first one. These two
//! wrappers present a runtime-sized list as tuple-like in both directions, so devcloud sends exactly
//! the arguments it is given and reports exactly the arguments (or ack values) it received.

use std::fmt;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Serializes as N Socket.IO arguments.
pub(crate) struct OutArgs<'a>(pub(crate) &'a [Value]);

impl Serialize for OutArgs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut t = serializer.serialize_tuple(self.0.len())?;
        for v in self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

/// Deserializes every Socket.IO argument (or every value of an ack).
#[derive(Debug, Default)]
pub(crate) struct InArgs(pub(crate) Vec<Value>);

impl<'de> Deserialize<'de> for InArgs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = InArgs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Socket.IO argument list")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InArgs, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(v) = seq.next_element::<Value>()? {
                    out.push(v);
                }
                Ok(InArgs(out))
            }
        }
        // deserialize_tuple is what makes socketioxide hand over the whole list; serde_json ignores
        // the length, so usize::MAX only means "any".
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}
