//! Generated packs: rules from vendors' catalogues of exact download sizes (the "reference
//! downloads" method).
