"""Validation against OpenSim's own reference results and measured EMG (`biohuman validate`).

Modules: `rajagopal` (Rajagopal walking: IK, ID, ground forces, activations vs MocoInverse),
`emg` (on/off timing and correlation with EMG), `gait2392` (Static Optimization reference),
`c3d` (C3D reading vs OpenSim's conversions), `report` (runs the parts, merges
`validation.json`, plots). See docs/validation.md.
"""
