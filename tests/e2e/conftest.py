"""End-to-end fixtures: a real stack of processes per test (see e2e_helpers.Stack)."""

from __future__ import annotations

import pytest

from tests.support.redis import require_redis_server


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/test_e2e_" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def stack_factory(tmp_path, request):
    from e2e_helpers import Stack, use_fake_codec

    require_redis_server()
    if not use_fake_codec():
        try:
            import codec.image  # noqa: F401
            import codec.options  # noqa: F401
            import codec.pipeline  # noqa: F401
        except ImportError as exc:  # the codec is still being written
            pytest.skip(f"the real codec is not importable yet ({exc}); METALIC_E2E_CODEC=fake to run on the fake")
    stacks = []

    def make(**kwargs) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", **kwargs)
        stack.tmp.mkdir(parents=True)
        stacks.append(stack)
        return stack.start()

    yield make
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for stack in stacks:
        if failed:
            print("\n".join(stack.tail(name, 80) for name in stack.procs))
        stack.stop()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
