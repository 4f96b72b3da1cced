"""Exceptions shared by the dmc estimators (no dmc imports: no cycles).

:class:`NotFittedError` follows scikit-learn: when scikit-learn is
installed it *is* :class:`sklearn.exceptions.NotFittedError`, so code that
catches scikit-learn's class catches dmc's; without scikit-learn it is an
equivalent class.  Either way it is both a :class:`ValueError` and an
:class:`AttributeError`, so tools that catch either one keep working.
"""

__all__ = ["NotFittedError"]

try:
    from sklearn.exceptions import NotFittedError
except ImportError:  # scikit-learn is optional (dmc[sklearn])

    class NotFittedError(ValueError, AttributeError):
        """A method that needs a fitted model was called before ``fit``.

        The same as :class:`sklearn.exceptions.NotFittedError` (which dmc
        uses instead when scikit-learn is installed): both a ``ValueError``
        and an ``AttributeError``.
        """

    NotFittedError.__module__ = "dmc"


def not_fitted(estimator, fit_call="fit"):
    """The :class:`NotFittedError` for ``estimator``, naming the call that fits it."""
    return NotFittedError(f"this {type(estimator).__name__} is not fitted yet; call "
                          f"{fit_call} first.")
