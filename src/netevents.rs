//! TODO(owner): netevents
