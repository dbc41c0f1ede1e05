"""Layer-0 primitives shared by every stage: Lanczos taps, spherical geometry, JSON-safe
values and optional-dependency imports. Nothing here imports from the rest of desgw."""
