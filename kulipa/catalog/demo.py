"""The demo catalogue (``manage.py load_demo_catalog``): things a Maputo shop sells, prices in MZN.

A few products have only 1–3 units so two customers racing for the last one is easy to try.
Images are tiny hand-made SVGs in ``kulipa/static/catalog/<slug>.svg``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypedDict


class DemoProduct(TypedDict):
    slug: str
    name: str
    description: str
    price: Decimal
    stock_on_hand: int


DEMO_PRODUCTS: list[DemoProduct] = [
    {
        "slug": "capulana-mare",
        "name": "Capulana estampada Maré",
        "description": "Capulana de algodão, 1,8 m × 1,1 m, padrão de ondas azuis e amarelas.",
        "price": Decimal("450.00"),
        "stock_on_hand": 25,
    },
    {
        "slug": "capulana-vermelha",
        "name": "Capulana tradicional vermelha",
        "description": "Capulana clássica vermelha e preta, tecido grosso, ideal para festas.",
        "price": Decimal("380.00"),
        "stock_on_hand": 2,
    },
    {
        "slug": "caju-torrado-500g",
        "name": "Castanha de caju torrada 500 g",
        "description": "Caju de Nampula torrado e levemente salgado.",
        "price": Decimal("350.00"),
        "stock_on_hand": 40,
    },
    {
        "slug": "caju-piri-piri-250g",
        "name": "Castanha de caju com piri-piri 250 g",
        "description": "Caju torrado com piri-piri e limão. Pica!",
        "price": Decimal("220.00"),
        "stock_on_hand": 30,
    },
    {
        "slug": "molho-piri-piri-250ml",
        "name": "Molho piri-piri caseiro 250 ml",
        "description": "Malagueta, alho, limão e óleo, feito em pequenas quantidades.",
        "price": Decimal("150.00"),
        "stock_on_hand": 50,
    },
    {
        "slug": "piri-piri-po-100g",
        "name": "Piri-piri em pó 100 g",
        "description": "Malagueta seca moída, para temperar frango e marisco.",
        "price": Decimal("95.00"),
        "stock_on_hand": 60,
    },
    {
        "slug": "sumo-maracuja-1l",
        "name": "Sumo de maracujá 1 L",
        "description": "Sumo natural de maracujá, sem conservantes. Guardar no frio.",
        "price": Decimal("120.00"),
        "stock_on_hand": 24,
    },
    {
        "slug": "sumo-manga-1l",
        "name": "Sumo de manga 1 L",
        "description": "Manga madura de Inhambane, só fruta e água.",
        "price": Decimal("110.00"),
        "stock_on_hand": 18,
    },
    {
        "slug": "cha-gurue-100g",
        "name": "Chá preto do Gurué 100 g",
        "description": "Chá preto das plantações do Gurué, Zambézia.",
        "price": Decimal("180.00"),
        "stock_on_hand": 35,
    },
    {
        "slug": "cafe-manica-250g",
        "name": "Café moído de Manica 250 g",
        "description": "Café arábica das terras altas de Manica, torra média.",
        "price": Decimal("320.00"),
        "stock_on_hand": 12,
    },
    {
        "slug": "coco-ralado-200g",
        "name": "Coco ralado 200 g",
        "description": "Coco fresco ralado e seco ao sol, para matapa e bolos.",
        "price": Decimal("75.00"),
        "stock_on_hand": 1,
    },
    {
        "slug": "farinha-mandioca-1kg",
        "name": "Farinha de mandioca 1 kg",
        "description": "Farinha fina de mandioca para xima.",
        "price": Decimal("85.00"),
        "stock_on_hand": 100,
    },
    {
        "slug": "matapa-500g",
        "name": "Folha de mandioca para matapa 500 g",
        "description": "Folha de mandioca pilada e congelada, pronta a cozinhar.",
        "price": Decimal("130.00"),
        "stock_on_hand": 15,
    },
    {
        "slug": "amendoim-torrado-500g",
        "name": "Amendoim torrado 500 g",
        "description": "Amendoim de Gaza torrado na casca.",
        "price": Decimal("140.00"),
        "stock_on_hand": 45,
    },
    {
        "slug": "mel-niassa-500g",
        "name": "Mel silvestre do Niassa 500 g",
        "description": "Mel de floresta de miombo, colhido por apicultores do Niassa.",
        "price": Decimal("380.00"),
        "stock_on_hand": 3,
    },
    {
        "slug": "cesto-palha",
        "name": "Cesto de palha artesanal",
        "description": "Cesto entrançado à mão em palha de palmeira, 30 cm.",
        "price": Decimal("650.00"),
        "stock_on_hand": 6,
    },
    {
        "slug": "escultura-makonde",
        "name": "Escultura Makonde em pau-preto",
        "description": "Peça única esculpida à mão em Cabo Delgado, cerca de 25 cm.",
        "price": Decimal("2500.00"),
        "stock_on_hand": 1,
    },
    {
        "slug": "sabao-coco",
        "name": "Sabão de coco artesanal",
        "description": "Barra de 150 g feita com óleo de coco de Inhambane.",
        "price": Decimal("60.00"),
        "stock_on_hand": 80,
    },
    {
        "slug": "oleo-coco-500ml",
        "name": "Óleo de coco virgem 500 ml",
        "description": "Prensado a frio, para cozinhar e para a pele.",
        "price": Decimal("260.00"),
        "stock_on_hand": 20,
    },
    {
        "slug": "camarao-seco-250g",
        "name": "Camarão seco 250 g",
        "description": "Camarão do Banco de Sofala seco ao sol, para caril.",
        "price": Decimal("540.00"),
        "stock_on_hand": 10,
    },
]
