"""CPU-bound tests: dense integer matrix algebra in pure Python."""

from __future__ import annotations

import pytest

Matrix = list[list[int]]


def matmul(a: Matrix, b: Matrix) -> Matrix:
    columns = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, col)) for col in columns] for row in a]


def transpose(a: Matrix) -> Matrix:
    return [list(col) for col in zip(*a)]


def sample(size: int, salt: int) -> Matrix:
    return [[(i * 31 + j * 17 + salt) % 11 - 5 for j in range(size)] for i in range(size)]


def identity(size: int) -> Matrix:
    return [[int(i == j) for j in range(size)] for i in range(size)]


@pytest.mark.parametrize("size", [150, 180])
def test_identity_is_neutral(size: int) -> None:
    a = sample(size, salt=size)
    assert matmul(a, identity(size)) == a


def test_transpose_of_product() -> None:
    a, b = sample(140, salt=1), sample(140, salt=2)
    assert transpose(matmul(a, b)) == matmul(transpose(b), transpose(a))


def test_fibonacci_by_matrix_power() -> None:
    def power(m: Matrix, exponent: int) -> Matrix:
        result = identity(len(m))
        while exponent:
            if exponent & 1:
                result = matmul(result, m)
            m = matmul(m, m)
            exponent >>= 1
        return result

    fib = [0, 1]
    for _ in range(2, 30_001):
        fib.append(fib[-1] + fib[-2])
    assert power([[1, 1], [1, 0]], 30_000)[0][1] == fib[30_000]
