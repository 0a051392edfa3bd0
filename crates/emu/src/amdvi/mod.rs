//! AMD-Vi model (issue 3).
