"""Show the contract suite's failed asserts in full (it is installed, not a test module)."""

import pytest

pytest.register_assert_rewrite("nodepool.testing.adapter_contract",
                               "nodepool.testing.contract_harness")
