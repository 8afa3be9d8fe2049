"""The one comparison rule (codec/adapt/goal.py) and the three places that use it."""

from types import SimpleNamespace

import pytest

from codec.adapt.goal import Goal, rd_cost
from codec.adapt.refine import RDCost, TargetQuality, TargetRate
from codec.options import RATE_TOLERANCE, validate_options


def coded(bpp: float, psnr: float, nbytes: int = 100):
    return SimpleNamespace(bpp=bpp, psnr=psnr, data=b"\0" * nbytes)


class TestGoal:
    def test_of_reads_the_target_kind_from_the_options(self):
        assert Goal.of(validate_options({"target_bpp": 0.5}), 0.01) == Goal("bpp", 0.5, RATE_TOLERANCE)
        assert Goal.of(validate_options({"target_psnr": 31.0}), 0.01).kind == "psnr"
        assert Goal.of(validate_options({"lmbda": 0.02}), 0.02) == Goal("lambda", 0.02)
        assert Goal.of(validate_options({"target_bpp": 0.5}), 0.01, rate_control=False) == Goal("lambda", 0.01)

    def test_inside_tolerance_the_best_psnr_wins(self):
        goal = Goal("bpp", 1.0, 0.02)
        assert goal.best([coded(1.015, 30.0), coded(0.99, 31.0), coded(1.0, 30.5)]).psnr == 31.0

    def test_inside_beats_outside_whatever_the_psnr(self):
        goal = Goal("bpp", 1.0, 0.02)
        assert goal.best([coded(1.5, 40.0), coded(1.01, 30.0)]).bpp == 1.01

    def test_outside_an_overshoot_counts_double(self):
        goal = Goal("bpp", 1.0, 0.02)
        # 5% over (counts 10%) loses to 8% under
        assert goal.best([coded(1.05, 35.0), coded(0.92, 30.0)]).bpp == 0.92
        assert goal.best([coded(1.03, 35.0), coded(0.92, 30.0)]).bpp == 1.03

    def test_psnr_goal_takes_the_smallest_file_that_meets_it(self):
        goal = Goal("psnr", 30.0)
        assert len(goal.best([coded(1.0, 31.0, 300), coded(0.8, 30.1, 200), coded(0.5, 29.9, 100)]).data) == 200
        assert goal.best([coded(0.5, 29.0, 100), coded(0.6, 29.5, 120)]).psnr == 29.5

    def test_lambda_goal_takes_the_lowest_rd_cost(self):
        goal = Goal("lambda", 0.01)
        a, b = coded(0.5, 30.0), coded(0.6, 31.0)
        assert goal.best([a, b]) is min((a, b), key=lambda c: rd_cost(c.bpp, c.psnr, 0.01))

    @pytest.mark.parametrize(("bpp", "psnr", "expected"), [(0.505, 20.0, True), (0.52, 20.0, False)])
    def test_reached(self, bpp, psnr, expected):
        assert Goal("bpp", 0.5, 0.02).reached(bpp, psnr) is expected
        assert Goal("psnr", 30.0).reached(bpp, 30.0) is True
        assert Goal("lambda", 0.01).reached(bpp, psnr) is None


class TestOneRuleEverywhere:
    """Refinement's objectives rank iterates exactly as the goal ranks coded files."""

    def costs(self):
        return [RDCost(cost=0.0, bpp=b, mse=m) for b in (0.40, 0.49, 0.50, 0.51, 0.56, 0.62)
                for m in (1e-3, 2e-3, 5e-4)]

    def test_target_rate_orders_iterates_like_the_goal(self):
        obj = TargetRate(aim=0.5, band=0.01, start_bpp=0.5, lmbda_range=(1e-3, 1e-1))
        goal = Goal("bpp", 0.5, 0.01 / 0.5)
        costs = self.costs()
        assert sorted(costs, key=obj.key) == sorted(costs, key=lambda c: goal.rank(c.bpp, c.psnr))

    def test_target_quality_orders_iterates_like_the_goal(self):
        obj = TargetQuality(aim=30.03, floor=30.0, start_psnr=30.0, lmbda_range=(1e-3, 1e-1))
        goal = Goal("psnr", 30.0)
        costs = self.costs()
        assert sorted(costs, key=obj.key) == sorted(costs, key=lambda c: goal.rank(c.bpp, c.psnr))
