//! rig integration (in progress).
