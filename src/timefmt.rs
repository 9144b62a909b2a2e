//! TODO(owner): timefmt
