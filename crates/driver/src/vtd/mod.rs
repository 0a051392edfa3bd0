//! Intel VT-d driver.
