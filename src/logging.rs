//! TODO(owner): logging
