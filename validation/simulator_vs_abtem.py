"""ptyscope's 4D-STEM simulator against abTEM (issue 3 acceptance).

SrTiO3 [001], 300 kV, 22 mrad, 3x3x21 unit cells (82 Å thick), untilted and tilted by
5 mrad along each axis (and both). For every pattern: normalised cross-correlation (NCC)
and total-intensity ratio against abTEM, which is given the same grid and the tilt through
ptyscope's one mapping (abtem_bridge.ptyscope_tilt_to_abtem). The tilted cases are then
repeated with the two plausible wrong mappings (sign flipped, axes swapped) to show that
only the correct one agrees.

Needs the optional extra: pip install 'ptyscope[sim]'. Run:
    python validation/simulator_vs_abtem.py
Exit status 1 if an acceptance threshold (NCC >= 0.99, intensity within 1%) is missed.
"""

from __future__ import annotations

import sys
import time

from ptyscope.simulation.abtem_bridge import simulate_4dstem_abtem
from ptyscope.simulation.compare import compare_patterns
from ptyscope.simulation.specimens import SRTIO3_LATTICE_CONSTANT_ANG, srtio3_slab
from ptyscope.simulation.stem4d import ProbeSettings, ScanSettings, simulate_4dstem

A = SRTIO3_LATTICE_CONSTANT_ANG
SPECIMEN = srtio3_slab((3, 3), 21 * A)
PROBE = ProbeSettings(300e3, 22.0)
SCAN = ScanSettings((4, 4), (A / 4, A / 4))  # one unit cell: on and between columns
COMMON = {"sampling_ang": 0.05, "slice_thickness_ang": A / 2}
TILTS = [(0.0, 0.0), (5.0, 0.0), (0.0, 5.0), (5.0, 5.0)]  # ptyscope (θ_y, θ_x) [mrad]


def main() -> int:
    print(
        f"SrTiO3 [001] {len(SPECIMEN)} atoms, thickness {SPECIMEN.cell[2, 2]:.1f} Å, "
        f"300 kV, 22 mrad, {SCAN.shape[0]}x{SCAN.shape[1]} positions"
    )
    print(
        f"{'tilt (θy, θx) mrad':<20}{'mapping':<14}{'min NCC':>10}{'max |ΔI/I|':>12}"
        f"{'t ptyscope':>12}{'t abTEM':>10}"
    )
    ok = True
    for tilt in TILTS:
        start = time.perf_counter()
        reference = simulate_4dstem_abtem(SPECIMEN, PROBE, SCAN, tilt_mrad=tilt, **COMMON)
        t_abtem = time.perf_counter() - start
        mappings = {"correct": tilt}
        if tilt != (0.0, 0.0):
            mappings["sign flipped"] = (-tilt[0], -tilt[1])
            if tilt[0] != tilt[1]:
                mappings["axes swapped"] = (tilt[1], tilt[0])
        for name, ours_tilt in mappings.items():
            start = time.perf_counter()
            ours = simulate_4dstem(SPECIMEN, PROBE, SCAN, tilt_mrad=ours_tilt, **COMMON)
            t_ours = time.perf_counter() - start
            agreement = compare_patterns(ours.dataset.data, reference.dataset.data)
            passed = agreement.worst_ncc >= 0.99 and agreement.worst_intensity_error <= 0.01
            if name == "correct":
                ok &= passed
            else:
                ok &= agreement.worst_ncc < 0.99  # a wrong mapping must not agree
            print(
                f"{tilt!s:<20}{name:<14}{agreement.worst_ncc:>10.5f}"
                f"{agreement.worst_intensity_error:>12.3%}{t_ours:>11.1f}s{t_abtem:>9.1f}s"
            )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
