//! TODO(owner): runtime::rehome
