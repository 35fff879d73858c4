from engine.ids import new_id


def test_ids_sort_in_creation_order_even_within_one_millisecond() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)
