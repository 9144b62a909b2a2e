//! TODO(owner): topics
