//! Dispatch tests: validation, ack shapes, emit+ack topics.

use super::*;
