"""scikit-learn's own estimator checks, for every solver, and its parameters, one by one."""

import inspect
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.utils._param_validation import StrOptions, make_constraint
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn_helpers import numpy_session, own_backends, torch_session

from portable_mlp.sklearn import MLPClassifier, MLPRegressor

SOLVERS = ("adam", "sgd", "lbfgs")
# scikit-learn's own test of its MLPs uses max_iter=100 and ignores ConvergenceWarning.
CHECKED = [make(max_iter=100, solver=solver) for solver in SOLVERS
           for make in (MLPClassifier, MLPRegressor)]


@own_backends
@parametrize_with_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    """Every check, the array API ones (torch, array_api_strict) included; no xfails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# The whole suite again with the model on torch, whatever the input: everything but the
# array API checks (a fixed backend takes any input, so it does not declare array API support).
ON_TORCH = [est.set_params(backend="torch") for est in
            (make(max_iter=100, solver=solver) for solver in SOLVERS
             for make in (MLPClassifier, MLPRegressor))]


@pytest.fixture
def one_torch_thread():
    """Tiny matrices: torch's thread pool only adds contention (10x slower on 2 busy cores)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@torch_session
@parametrize_with_checks(ON_TORCH)
def test_sklearn_estimator_checks_on_torch(estimator, check, one_torch_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


PAIRS = [(MLPClassifier, SkClassifier), (MLPRegressor, SkRegressor)]


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_every_scikit_learn_parameter_is_ours_too(ours, theirs):
    """Each of scikit-learn's parameters (those of the installed release: a new one fails
    this test) exists here with the same default, kind and position, and the same
    constraints (``activation``: scikit-learn's names and more); ours come after,
    keyword-only."""
    sk = inspect.signature(theirs).parameters
    mine = inspect.signature(ours).parameters
    assert list(mine)[:len(sk)] == list(sk), "scikit-learn's parameters, in its order"
    for name, param in sk.items():
        assert mine[name].kind == param.kind, name
        assert mine[name].default == param.default, name
        if name == "activation":  # the newer activations too (docs/pieces.md)
            assert _constraints(ours, name)[0] > _constraints(theirs, name)[0]
            continue
        assert _constraints(ours, name) == _constraints(theirs, name), name
    extra = list(mine)[len(sk):]
    assert all(mine[name].kind is inspect.Parameter.KEYWORD_ONLY for name in extra)


def _constraints(cls, name):
    out = []
    for c in cls._parameter_constraints[name]:
        c = make_constraint(c)
        out.append(frozenset(c.options) if isinstance(c, StrOptions) else str(c))
    return out


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_scikit_learn_params_rebuild_our_estimator(ours, theirs):
    """``Ours(**theirs.get_params())``: every value scikit-learn accepts works here."""
    params = theirs(solver="lbfgs", max_fun=50, momentum=1.0, n_iter_no_change=np.inf,
                    hidden_layer_sizes=(3, 2), activation="tanh", max_iter=5).get_params()
    est = ours(**params)
    assert {k: v for k, v in est.get_params().items() if k in params} == params
    X = np.random.default_rng(0).standard_normal((30, 3))
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    assert est.n_iter_ <= 5 and [c.shape for c in est.coefs_] == [(3, 3), (3, 2), (2, 1)]


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("solver, early_stopping", [
    ("adam", False), ("sgd", True), ("lbfgs", False)])
def test_every_fitted_attribute_of_scikit_learns_is_ours_too(ours, theirs, solver,
                                                              early_stopping):
    """The public fitted attributes a scikit-learn fit sets (those of the installed
    release) exist here after the same fit, with the same values where they are counts."""
    X = np.random.default_rng(0).standard_normal((60, 3))
    y = (X[:, 0] > 0).astype(int)
    kwargs = dict(hidden_layer_sizes=(4,), solver=solver, early_stopping=early_stopping,
                  max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk, mine = theirs(**kwargs).fit(X, y), ours(**kwargs).fit(X, y)
    public = [k for k in vars(sk) if k.endswith("_") and not k.startswith("_")]
    assert {"coefs_", "intercepts_", "n_iter_"} <= set(public)
    for name in public:
        assert hasattr(mine, name), name
    for name in ("n_iter_", "n_layers_", "n_outputs_", "out_activation_", "t_",
                 "n_features_in_"):
        assert getattr(mine, name) == getattr(sk, name), name


@numpy_session
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_momentum_one_trains_as_in_scikit_learn(ours, theirs, nesterov):
    """Issue 20, item 9: both declare momentum in [0, 1]; 1.0 raised here."""
    X = np.random.default_rng(0).standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(int)
    params = dict(hidden_layer_sizes=(3,), solver="sgd", momentum=1.0, max_iter=3,
                  nesterovs_momentum=nesterov, learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mine, ref = ours(**params).fit(X, y), theirs(**params).fit(X, y)
    np.testing.assert_allclose(mine.loss_curve_, ref.loss_curve_, rtol=1e-9)
