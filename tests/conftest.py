"""Shared test set-up: every test runs torch on one thread (tiny matmuls are fastest there, and on a busy 2-core
machine a second thread waits for milliseconds), and the thread count is restored afterwards."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
