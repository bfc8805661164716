"""The RT path's record-making helpers (rtcore/emit.h) exercised in C: the
fault rate limiter and the trace-id sampling rule, compiled with the
project's headers and checked against what the contract says."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT

PROGRAM = r"""
#include <stdio.h>
#include "rtcore/emit.h"

static void limit(rtc_limiter *l, long code, long t_ms)
{
    uint32_t repeats = 0;
    int emit = rtc_limit(l, code, t_ms * 1000000LL, 1000000000LL, &repeats);
    printf("%s[%ld,%ld,%d,%u]", t_ms ? "," : "", code, t_ms, emit, emit ? repeats : 0);
}

int main(void)
{
    rtc_limiter l = {0};
    printf("{\"limit\": [");
    /* code -5 every 100 ms for 2.5 s, then -22 once at 2.55 s, then -5 again */
    for (long t = 0; t <= 2500; t += 100)
        limit(&l, -5, t);
    limit(&l, -22, 2550);
    limit(&l, -22, 2600);
    limit(&l, -5, 2650);
    printf("], \"sampled\": [");
    /* the decision uses the low 8 bytes (trace id bytes 8..15), little-endian */
    uint32_t ppms[] = {0, 1, 250000, 500000, 999999, 1000000};
    uint64_t los[] = {0, 1, UINT64_MAX / 4 - 1, UINT64_MAX / 4 + 1000000000000ULL,
                      UINT64_MAX / 2 - 1, UINT64_MAX / 2 + 100000000000000ULL, UINT64_MAX};
    int first = 1;
    for (unsigned p = 0; p < sizeof ppms / sizeof ppms[0]; p++) {
        uint64_t th = rtc_sample_threshold(ppms[p]);
        for (unsigned i = 0; i < sizeof los / sizeof los[0]; i++) {
            uint8_t id[16];
            memset(id, 0xff, 8); /* the high half must not matter */
            memcpy(id + 8, &los[i], 8);
            printf("%s[%u,%u,%d]", first ? "" : ",", ppms[p], i, rtc_trace_sampled(id, th));
            first = 0;
        }
    }
    printf("]}\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("emit")
    src, exe = d / "emit_test.c", d / "emit_test"
    src.write_text(PROGRAM)
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Werror", f"-I{ROOT / 'rtcore' / 'include'}", "-o", exe, src],
        check=True,
        timeout=60,
    )
    return json.loads(subprocess.run([exe], capture_output=True, text=True, check=True).stdout)


def test_a_repeated_fault_is_recorded_once_a_second_with_the_count_folded(results):
    emitted = [(code, t, repeats) for code, t, emit, repeats in results["limit"] if emit]
    # -5: at 0, then at the first time a second later each time, with the
    # repeats folded in between; a new code (-22) is recorded at once, and so
    # is the old one when it comes back
    assert emitted == [(-5, 0, 0), (-5, 1000, 9), (-5, 2000, 9), (-22, 2550, 0), (-5, 2650, 0)]
    folded = [r for r in results["limit"] if not r[2]]
    assert len(folded) == 26 + 2 + 1 - len(emitted)


def test_a_cycle_is_sampled_from_the_low_half_of_its_trace_id(results):
    los = [
        0,
        1,
        2**64 // 4 - 1,
        2**64 // 4 + 10**12,
        2**64 // 2 - 1,
        2**64 // 2 + 10**14,
        2**64 - 1,
    ]
    for ppm, i, sampled in results["sampled"]:
        expected = ppm == 1_000_000 or los[i] < ppm * ((2**64 - 1) // 1_000_000)
        assert bool(sampled) == expected, (ppm, i)
    assert not any(s for ppm, _, s in results["sampled"] if ppm == 0), "ratio 0: never"
