//! TODO(owner): runtime
