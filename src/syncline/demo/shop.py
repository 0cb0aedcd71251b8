"""The demo shop: schema, locally generated catalogue and customers, seed orders, and the
concurrent workload (new orders, price changes, product edits, deletes)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE categories (id int PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE products (
  id serial PRIMARY KEY, category_id int NOT NULL REFERENCES categories(id),
  name text NOT NULL, description text, price numeric(10,2) NOT NULL, tags text[],
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE customers (
  id serial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL, city text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
  id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers(id),
  status text NOT NULL, placed_at timestamptz NOT NULL DEFAULT now(), total numeric(12,2)
);
CREATE TABLE order_lines (
  order_id bigint REFERENCES orders(id) ON DELETE CASCADE, line int,
  product_id int NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL,
  PRIMARY KEY (order_id, line)
);
CREATE INDEX ON order_lines (product_id);
CREATE INDEX ON orders (status);
"""

TABLES = ("categories", "products", "customers", "orders", "order_lines")


@dataclass(frozen=True)
class Category:
    name: str
    items: dict[str, tuple[str, ...]]
    """noun -> materials it is made of"""
    features: tuple[str, ...]


def _items(spec: str) -> dict[str, tuple[str, ...]]:
    """``"noun: material, material; noun: ..."`` -> {noun: (material, ...)}."""
    out = {}
    for part in spec.split(";"):
        noun, materials = part.split(":")
        out[noun.strip()] = tuple(m.strip() for m in materials.split(","))
    return out


CATEGORIES: tuple[Category, ...] = (
    Category(
        "Kitchen",
        _items(
            "chef's knife: carbon steel, Damascus steel; skillet: cast iron, carbon steel;"
            " cutting board: walnut, end-grain oak, bamboo; stockpot: stainless steel, enamelled steel;"
            " mixing bowl set: stainless steel, stoneware; spice grinder: beech, ceramic"
        ),
        ("an edge that lasts for months", "even heat on gas and induction", "a dishwasher-safe finish"),
    ),
    Category(
        "Coffee & Tea",
        _items(
            "pour-over kettle: brushed steel, copper; espresso grinder: aluminium, matte black steel;"
            " french press: borosilicate glass, stainless steel; teapot: cast iron, porcelain;"
            " milk frother: stainless steel; travel mug: insulated steel, bamboo"
        ),
        (
            "a precise gooseneck pour",
            "40 grind settings",
            "six hours of heat retention",
            "a four-minute brew",
        ),
    ),
    Category(
        "Home",
        _items(
            "throw blanket: merino wool, alpaca wool, organic cotton;"
            " duvet cover: washed linen, percale cotton; reading lamp: brass, oak, opal glass;"
            " cushion: linen, wool boucle; wall clock: oak, walnut;"
            " scented candle: soy wax, beeswax"
        ),
        ("warmth without the weight", "a softness that grows with every wash", "a dimmable warm light"),
    ),
    Category(
        "Outdoor",
        _items(
            "rain jacket: recycled nylon, waxed cotton; hiking backpack: ripstop nylon, waxed canvas;"
            " camping stove: titanium, stainless steel; sleeping bag: down, synthetic fill;"
            " trekking poles: carbon fibre, aluminium; headlamp: recycled plastic, aluminium"
        ),
        ("fully taped waterproof seams", "the pack size of a water bottle", "a 300 lumen beam"),
    ),
    Category(
        "Office",
        _items(
            "standing desk: oak, birch plywood; office chair: recycled mesh, wool felt;"
            " dotted notebook: recycled paper, linen-bound paper; fountain pen: brass, resin;"
            " desk organizer: cork, walnut; monitor arm: aluminium, steel"
        ),
        (
            "whisper-quiet motors",
            "adaptive lumbar support",
            "fountain-pen friendly paper",
            "cable management",
        ),
    ),
    Category(
        "Audio",
        _items(
            "wireless headphones: aluminium, lambskin; bookshelf speaker: walnut, birch plywood;"
            " turntable: oak, acrylic; portable speaker: recycled fabric, silicone;"
            " earbuds: recycled plastic; podcast microphone: die-cast zinc, steel"
        ),
        ("active noise cancelling", "30 hours of battery", "a warm, detailed sound", "a splash-proof body"),
    ),
    Category(
        "Cycling",
        _items(
            "bike light set: aluminium, recycled plastic; helmet: in-mould polycarbonate;"
            " saddle bag: waxed canvas, recycled nylon; floor pump: steel, aluminium;"
            " bike lock: hardened steel; cycling gloves: leather, merino wool"
        ),
        ("USB-C charging", "MIPS protection", "a head for every valve", "visibility from 500 metres"),
    ),
    Category(
        "Garden",
        _items(
            "pruning shears: carbon steel, stainless steel; watering can: galvanised steel, copper;"
            " raised bed: cedar, larch; garden hose: recycled rubber; seed starter kit: bamboo fibre;"
            " hand trowel: stainless steel, ash wood"
        ),
        ("a clean cut that never crushes stems", "a kink-free design", "a size for small balconies"),
    ),
)
ADJECTIVES = (
    "compact", "lightweight", "heavy-duty", "waterproof", "quiet", "foldable", "handmade",
    "classic", "minimalist", "insulated",
)  # fmt: skip
BRANDS = (
    "Nordvik", "Alder & Finch", "Kestrel", "Bramble", "Fjellborg", "Larkspur", "Tidewater",
    "Copperline", "Oakhaven", "Ridgeway",
)  # fmt: skip
CLOSERS = (
    "Backed by a five-year warranty.",
    "Ships in plastic-free packaging.",
    "Designed in Copenhagen, made in Portugal.",
    "A favourite of our support team.",
    "Repairable: spare parts stay available for ten years.",
    "Now in a new colour.",
)
FIRST = (
    "Ada", "Bruno", "Chen", "Dara", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kofi",
    "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara", "Ugo", "Vera",
)  # fmt: skip
LAST = (
    "Andersen", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito",
    "Jansen", "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Rossi", "Silva",
)  # fmt: skip
CITIES = ("Lisbon", "Berlin", "Oslo", "Lyon", "Krakow", "Porto", "Ghent", "Turin", "Malmo", "Leeds")
STATUSES = ("new", "paid", "shipped", "delivered")


def product(rnd: random.Random, cat_index: int | None = None) -> tuple[int, str, str, Decimal, list[str]]:
    """(category id, name, description, price, tags) of a plausible product."""
    ci = rnd.randrange(len(CATEGORIES)) if cat_index is None else cat_index
    cat = CATEGORIES[ci]
    noun = rnd.choice(list(cat.items))
    material, adj = rnd.choice(cat.items[noun]), rnd.choice(ADJECTIVES)
    brand = rnd.choice(BRANDS)
    name = f"{brand} {adj.capitalize()} {material.title()} {noun.title()}"
    features = rnd.sample(cat.features, 2)
    description = (
        f"{adj.capitalize()} {noun} in {material}, with {features[0]} and {features[1]}. "
        f"{rnd.choice(CLOSERS)}"
    )
    price = Decimal(rnd.randrange(499, 39999)) / 100
    return ci + 1, name, description, price, [cat.name.lower(), adj, noun.split()[-1]]


def seed(dsn: str, rnd: random.Random, products: int = 320, customers: int = 240, orders: int = 1500) -> None:
    """Create the schema and fill it (about 6,000 rows, generated locally)."""
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(SCHEMA)
        cur.executemany(
            "INSERT INTO categories VALUES (%s, %s)", [(i + 1, c.name) for i, c in enumerate(CATEGORIES)]
        )
        prices: list[Decimal] = []
        prows = []
        for i in range(products):
            p = product(rnd, i % len(CATEGORIES))
            prices.append(p[3])
            prows.append(p)
        cur.executemany(
            "INSERT INTO products (category_id, name, description, price, tags) VALUES (%s, %s, %s, %s, %s)",
            prows,
        )
        crows = []
        for i in range(customers):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            crows.append(
                (
                    f"{first.lower()}.{last.lower()}{i}@example.com",
                    f"{first} {last}",
                    rnd.choice(CITIES),
                    now - timedelta(days=rnd.uniform(90, 900)),
                )
            )
        cur.executemany(
            "INSERT INTO customers (email, name, city, created_at) VALUES (%s, %s, %s, %s)", crows
        )
        orows, lrows = [], []
        for oid in range(1, orders + 1):
            total = Decimal(0)
            for line in range(1, rnd.randint(2, 5)):
                pid = rnd.randint(1, products)
                qty = rnd.choice((1, 1, 1, 2, 3))
                lrows.append((oid, line, pid, qty, prices[pid - 1]))
                total += qty * prices[pid - 1]
            placed = now - timedelta(days=rnd.uniform(0, 90))
            status = "delivered" if placed < now - timedelta(days=7) else rnd.choice(STATUSES)
            orows.append((oid, rnd.randint(1, customers), status, placed, total))
        cur.executemany(
            "INSERT INTO orders (id, customer_id, status, placed_at, total) VALUES (%s, %s, %s, %s, %s)",
            orows,
        )
        cur.executemany("INSERT INTO order_lines VALUES (%s, %s, %s, %s, %s)", lrows)
        cur.execute("SELECT setval('orders_id_seq', %s)", (orders,))


@dataclass
class WorkloadStats:
    transactions: int = 0
    retries: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str) -> None:
        with self.lock:
            self.transactions += 1
            self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


class Workload:
    """``clients`` threads, each with its own connection, committing small transactions
    until :meth:`stop` (about ``rate`` transactions per second per client)."""

    def __init__(self, dsn: str, clients: int = 4, rate: float = 40.0, seed: int = 1) -> None:
        self.dsn = dsn
        self.stats = WorkloadStats()
        self._stop = threading.Event()
        self._pause = 1.0 / rate if rate > 0 else 0.0
        self._threads = [
            threading.Thread(target=self._client, args=(seed + i,), name=f"demo-client-{i}", daemon=True)
            for i in range(clients)
        ]
        self.errors: list[str] = []

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _client(self, seed: int) -> None:
        rnd = random.Random(seed)
        try:
            with psycopg.connect(self.dsn) as conn:
                while not self._stop.is_set():
                    kind = _pick(rnd)
                    try:
                        with conn.transaction():
                            _OPS[kind](conn, rnd)
                        self.stats.add(kind)
                    except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                        with self.stats.lock:
                            self.stats.retries += 1
                    if self._pause:
                        self._stop.wait(rnd.uniform(0, 2 * self._pause))
        except psycopg.Error as e:  # the server went away (Ctrl-C): the demo is stopping anyway
            if not self._stop.is_set():
                self.errors.append(str(e).strip().splitlines()[0])


def _pick(rnd: random.Random) -> str:
    r = rnd.random()
    for kind, upto in _MIX:
        if r < upto:
            return kind
    return "new order"


def _new_order(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    picked = conn.execute(
        "SELECT id, price FROM products ORDER BY random() LIMIT %s", (rnd.randint(1, 4),)
    ).fetchall()
    row = conn.execute(
        "INSERT INTO orders (customer_id, status) SELECT id, 'new' FROM customers"
        " ORDER BY random() LIMIT 1 RETURNING id"
    ).fetchone()
    assert row is not None
    total = Decimal(0)
    for line, (pid, price) in enumerate(picked, 1):
        qty = rnd.choice((1, 1, 2, 3))
        conn.execute("INSERT INTO order_lines VALUES (%s, %s, %s, %s, %s)", (row[0], line, pid, qty, price))
        total += qty * price
    conn.execute("UPDATE orders SET total = %s WHERE id = %s", (total, row[0]))


def _price_change(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    conn.execute(
        "UPDATE products SET price = greatest(round(price * %s::numeric, 2), 0.99), updated_at = now()"
        " WHERE id = (SELECT id FROM products ORDER BY random() LIMIT 1)",
        (round(rnd.uniform(0.85, 1.12), 3),),
    )


def _product_edit(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    row = conn.execute("SELECT id, category_id FROM products ORDER BY random() LIMIT 1").fetchone()
    if row is None:
        return
    _, name, description, _, tags = product(rnd, int(row[1]) - 1)
    conn.execute(
        "UPDATE products SET name = %s, description = %s, tags = %s, updated_at = now() WHERE id = %s",
        (name, description, tags, row[0]),
    )


def _new_product(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    conn.execute(
        "INSERT INTO products (category_id, name, description, price, tags) VALUES (%s, %s, %s, %s, %s)",
        product(rnd),
    )


def _delete_product(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    conn.execute(
        "DELETE FROM products WHERE id = (SELECT id FROM products p WHERE NOT EXISTS"
        " (SELECT 1 FROM order_lines l WHERE l.product_id = p.id) ORDER BY random() LIMIT 1)"
    )


def _advance_order(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    frm, to = rnd.choice((("new", "paid"), ("paid", "shipped"), ("shipped", "delivered")))
    conn.execute(
        "UPDATE orders SET status = %s WHERE id = (SELECT id FROM orders WHERE status = %s"
        " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)",
        (to, frm),
    )


def _delete_order(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    conn.execute(
        "DELETE FROM orders WHERE id = (SELECT id FROM orders WHERE status = 'delivered'"
        " ORDER BY placed_at LIMIT 1 FOR UPDATE SKIP LOCKED)"
    )


def _rename_category(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    """A category renamed (and back): the search view's documents of its products follow."""
    conn.execute(
        "UPDATE categories SET name = CASE WHEN name LIKE '%% (new)' THEN left(name, -6)"
        " ELSE name || ' (new)' END WHERE id = (SELECT id FROM categories ORDER BY random() LIMIT 1)"
    )


def _new_customer(conn: psycopg.Connection[Any], rnd: random.Random) -> None:
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    conn.execute(
        "INSERT INTO customers (email, name, city) VALUES (%s, %s, %s)",
        (
            f"{first.lower()}.{last.lower()}.{time.time_ns()}@example.com",
            f"{first} {last}",
            rnd.choice(CITIES),
        ),
    )


_OPS = {
    "new order": _new_order,
    "price change": _price_change,
    "product edit": _product_edit,
    "new product": _new_product,
    "product delete": _delete_product,
    "order status": _advance_order,
    "order delete": _delete_order,
    "new customer": _new_customer,
    "category rename": _rename_category,
}
_MIX = (
    ("new order", 0.40),
    ("price change", 0.58),
    ("product edit", 0.70),
    ("new product", 0.74),
    ("product delete", 0.78),
    ("order status", 0.90),
    ("order delete", 0.96),
    ("category rename", 0.97),
    ("new customer", 1.0),
)
