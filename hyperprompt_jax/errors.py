"""What a one-line error message quotes of the exception behind it."""

from typing import Optional


def first_line(e: BaseException, max_chars: Optional[int] = 200) -> str:
  """The first line of `e`'s message (TensorFlow's own text for its errors,
  without the op context it appends), or `e`'s type name if it has none."""
  text = (getattr(e, 'message', None) or str(e)).strip()
  return text.splitlines()[0][:max_chars] if text else type(e).__name__
