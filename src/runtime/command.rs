//! TODO(owner): runtime::command
