//! TODO(owner): runtime::consumption
