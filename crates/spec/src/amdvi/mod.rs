//! AMD I/O Virtualization Technology (AMD-Vi): layouts. Filled in by the AMD-Vi work (issue 3).
