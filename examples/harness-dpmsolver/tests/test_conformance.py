"""The harness's conformance kit on this plugin's samplers, run as an author would.

Needs this distribution installed next to the harness (`pip install .[test]`), since
the kit looks the samplers up by name among the installed plugins.
"""

from harness.testing import check_sampler, conformance_test

# One pytest case per sampler: registration, parameters, output, seeds, batch
# independence, NFE, capabilities, final step and convergence to the exact oracle.
test_conformance = conformance_test("example_dpmpp_2m", "example_ddim")


def test_dpmpp_2m_costs_one_evaluation_per_step():
    report = check_sampler("example_dpmpp_2m", checks=["registration", "nfe"])
    assert report.result("nfe").message.startswith("3 steps to sigma = 0: 3;")
