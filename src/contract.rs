//! TODO(owner): contract
