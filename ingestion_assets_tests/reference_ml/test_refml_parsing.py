"""Plain-function tests of price cleaning, header detection, CSV sniffing and matching."""

from __future__ import annotations

import pytest
from ml_analyze_reference.matching import MATCHED, REVIEW, UNMATCHED, Catalogue
from ml_analyze_reference.parsing import (
    Header,
    PriceError,
    decode_csv,
    extract_items,
    find_header,
    map_columns,
    merge_header_rows,
    parse_price,
    sniff_delimiter,
)


@pytest.mark.parametrize(
    ("raw", "price"),
    [
        ("1 234,56 ₽", 1234.56),
        ("1\u00a0234,56\u00a0₽", 1234.56),
        ("1\u202f234 руб.", 1234.0),
        ("$12.50", 12.5),
        ("12,5 BYN", 12.5),
        ("1,234.56 USD", 1234.56),
        ("1.234.567,89 €", 1234567.89),
        ("$1,234", 1234.0),
        ("1'250.00", 1250.0),
        ("99 р.", 99.0),
        ("0", 0.0),
        (1990, 1990.0),
        (12.75, 12.75),
    ],
)
def test_prices_written_as_text_become_numbers(raw: object, price: float) -> None:
    assert parse_price(raw) == pytest.approx(price)


@pytest.mark.parametrize("raw", [None, "", "  \u00a0 "])
def test_an_empty_price_is_none(raw: object) -> None:
    assert parse_price(raw) is None


@pytest.mark.parametrize(
    "raw", ["call us", "по запросу", "от 100", "-5", "100-200", "20%", "12 шт"]
)
def test_a_price_that_is_not_a_number_raises(raw: str) -> None:
    with pytest.raises(PriceError) as error:
        parse_price(raw)
    assert str(error.value) == f"price '{raw}' is not a number"


HEADER = ["Наименование", "Артикул", "Цена"]


@pytest.mark.parametrize("above", [0, 2, 6])
def test_header_found_on_row_1_3_or_7(above: int) -> None:
    preamble = [
        ["ООО «Ромашка»"],
        ["Тел.: +7 (495) 000-00-00, e-mail: info@romashka.ru"],
        [None, None],
    ]
    rows = (preamble * 3)[:above] + [HEADER, ["Дрель", "D-1", "100"]]
    header = find_header(rows)
    assert header == Header(
        row_index=above, data_start=above + 1, columns={"name": 0, "sku": 1, "price": 2}
    )


def test_the_row_naming_most_fields_wins_over_a_note_with_two_labels() -> None:
    rows = [["Цены с НДС", "Товар в наличии"], ["Товар", "Код товара", "Цена товара", "Бренд"]]
    assert find_header(rows) == Header(1, 2, {"name": 0, "sku": 1, "price": 2, "brand": 3})


def test_no_header_without_name_and_price() -> None:
    assert find_header([["Дата", "Сумма"], ["01.03", "100"]]) is None
    assert find_header([["Прайс-лист: наименование, цена"]]) is None  # one banner cell


def test_header_beyond_the_search_window_is_not_found() -> None:
    assert find_header([["реклама"]] * 15 + [HEADER]) is None


@pytest.mark.parametrize(
    ("labels", "columns"),
    [
        (
            ["Product Name", "SKU", "Unit Price", "Category", "Brand", "UoM"],
            {"name": 0, "sku": 1, "price": 2, "category": 3, "brand": 4, "unit": 5},
        ),
        (
            ["НАИМЕНОВАНИЕ", "Штрих-код", "Код", "ед.", "РРЦ", "Цена опт"],
            {"name": 0, "sku": 2, "unit": 3, "price": 5},
        ),
        (["Товар", "Стоимость, руб.", "Группа товаров"], {"name": 0, "price": 1, "category": 2}),
        (["name", "cost", "code", "Цена за ед."], {"name": 0, "price": 1, "sku": 2}),
    ],
)
def test_columns_map_by_russian_and_english_labels(
    labels: list[str], columns: dict[str, int]
) -> None:
    assert map_columns(labels) == columns


def test_two_row_header_spreads_the_merged_label() -> None:
    top = ["Наименование", "Цена", None, None, "Бренд"]
    bottom = [None, "Опт", "Розница", None, None]
    assert merge_header_rows(top, bottom) == [
        "Наименование",
        "Цена Опт",
        "Цена Розница",
        None,
        "Бренд",
    ]

    rows = [top, bottom, ["Дрель", "100", "150", None, "Bosch"]]
    assert find_header(rows) == Header(0, 2, {"name": 0, "price": 1, "brand": 4})


def test_a_data_row_is_not_taken_for_a_second_header_row() -> None:
    rows = [HEADER, ["Товар дня: дрель", "D-1", "1 000 ₽"]]
    assert find_header(rows) == Header(0, 1, {"name": 0, "sku": 1, "price": 2})


def test_items_skip_nameless_rows_and_section_headings() -> None:
    rows = [
        HEADER,
        [None, None, None],
        ["Электроинструмент"],
        [None, "X-1", 5],
        ["Дрель", 4001.0, "1 000"],
        ["Молоток", "M-1", None],
    ]
    items = list(extract_items(rows, Header(0, 1, {"name": 0, "sku": 1, "price": 2})))
    assert [(item.row_number, item.name, item.sku, item.price) for item in items] == [
        (5, "Дрель", "4001", "1 000"),
        (6, "Молоток", "M-1", None),
    ]


def test_csv_encodings() -> None:
    assert decode_csv("\ufeffНаименование;Цена".encode()) == "Наименование;Цена"
    assert decode_csv("Наименование;Цена".encode()) == "Наименование;Цена"
    assert decode_csv("Наименование;Цена".encode("cp1251")) == "Наименование;Цена"


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        ("Прайс, тел. 123, e-mail a@b.c\nНаименование;Цена\nДрель;1 234,56\nМолоток;99,90\n", ";"),
        ("name\tprice\nDrill\t1,234.56\nHammer\t9.90\n", "\t"),
        ('name,price,sku\nDrill,"1,234.56",D-1\nHammer,9.90,H-1\n', ","),
    ],
)
def test_delimiter_sniffing(text: str, delimiter: str) -> None:
    assert sniff_delimiter(text) == delimiter


def test_match_bands() -> None:
    catalogue = Catalogue(
        ["Шуруповёрт аккумуляторный Makita DF333DWYE", "Лобзик электрический Bosch PST 700 E"]
    )
    matched = catalogue.match("ШУРУПОВЕРТ аккумуляторный Makita DF333DWYE")
    assert (matched.status, matched.product, matched.score) == (MATCHED, catalogue.names[0], 100)
    review = catalogue.match("Лобзик Bosch PST 650")
    assert (
        review.status == REVIEW and 70 <= review.score < 90 and review.product == catalogue.names[1]
    )
    unmatched = catalogue.match("Кофемашина Delonghi")
    assert (unmatched.status, unmatched.product) == (UNMATCHED, None) and unmatched.score < 70
    assert catalogue.match("!!!").status == UNMATCHED


def test_builtin_catalogue_loads() -> None:
    names = Catalogue.from_csv().names
    assert len(names) >= 40
    assert any(name.isascii() for name in names) and not all(name.isascii() for name in names)
