/**
 * A deterministic demo catalog: what a fresh embedded start and `npm run seed` load, and
 * what the benchmarks index. The same seed gives the same products. Categories with their own brands and product nouns, realistic-ish
 * names ("Apple iPhone Pro 15 128GB Black"), tags, prices in minor units, stock, dates.
 */
import type { Product } from "../proto/gen/meridian/product/v1/product";

/** A product as the API shows it (its contract, meridian.product.v1.Product), as generated here: version 1. */
export type CatalogProduct = Product;

/** mulberry32: a small, fast, seedable PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const CATALOG: Record<string, { brands: string[]; nouns: string[]; price: [number, number] }> = {
  Phones: {
    brands: ["Apple", "Samsung", "Google", "Xiaomi", "OnePlus", "Motorola", "Nokia", "Sony"],
    nouns: ["iPhone", "Galaxy", "Pixel", "Redmi", "Nord", "Moto", "Xperia", "smartphone"],
    price: [9900, 159900],
  },
  Laptops: {
    brands: ["Apple", "Lenovo", "Dell", "HP", "Asus", "Acer", "Microsoft", "Razer"],
    nouns: ["MacBook", "ThinkPad", "XPS", "Spectre", "Zenbook", "Swift", "Surface", "Blade", "notebook", "laptop"],
    price: [29900, 399900],
  },
  Headphones: {
    brands: ["Sony", "Bose", "Sennheiser", "Apple", "JBL", "Beats", "Jabra", "AudioTechnica"],
    nouns: ["headphones", "earbuds", "AirPods", "headset", "earphones"],
    price: [1900, 59900],
  },
  Cameras: {
    brands: ["Canon", "Nikon", "Sony", "Fujifilm", "Panasonic", "Olympus", "GoPro", "Leica"],
    nouns: ["camera", "mirrorless", "DSLR", "lens", "camcorder", "action camera"],
    price: [14900, 599900],
  },
  Kitchen: {
    brands: ["Philips", "Bosch", "KitchenAid", "Tefal", "Delonghi", "Smeg", "Breville", "Ninja"],
    nouns: ["blender", "toaster", "kettle", "espresso machine", "air fryer", "mixer", "microwave", "coffee grinder"],
    price: [1900, 89900],
  },
  Shoes: {
    brands: ["Nike", "Adidas", "Puma", "Asics", "NewBalance", "Reebok", "Salomon", "Converse"],
    nouns: ["sneakers", "running shoes", "trail shoes", "boots", "sandals", "trainers"],
    price: [2900, 24900],
  },
  Books: {
    brands: ["Penguin", "HarperCollins", "OReilly", "Springer", "Manning", "Wiley", "Vintage", "Bloomsbury"],
    nouns: ["novel", "cookbook", "guide", "handbook", "biography", "atlas", "textbook"],
    price: [599, 8999],
  },
  Toys: {
    brands: ["Lego", "Hasbro", "Mattel", "Playmobil", "Ravensburger", "Bandai", "Hornby", "Brio"],
    nouns: ["puzzle", "building set", "doll", "board game", "train set", "action figure", "robot kit"],
    price: [999, 29900],
  },
  Furniture: {
    brands: ["Ikea", "Hay", "Muuto", "Vitra", "Herman", "Steelcase", "Kartell", "Habitat"],
    nouns: ["chair", "desk", "sofa", "bookshelf", "lamp", "table", "wardrobe", "stool"],
    price: [2900, 249900],
  },
  Garden: {
    brands: ["Gardena", "Husqvarna", "Stihl", "Fiskars", "Weber", "Bosch", "Ryobi", "Worx"],
    nouns: ["lawn mower", "hedge trimmer", "hose", "barbecue", "pruner", "leaf blower", "chainsaw"],
    price: [1500, 149900],
  },
  Watches: {
    brands: ["Casio", "Seiko", "Garmin", "Apple", "Fossil", "Citizen", "Tissot", "Withings"],
    nouns: ["watch", "smartwatch", "chronograph", "fitness tracker"],
    price: [2900, 199900],
  },
  Gaming: {
    brands: ["Sony", "Microsoft", "Nintendo", "Logitech", "Razer", "Corsair", "SteelSeries", "HyperX"],
    nouns: ["console", "controller", "gaming mouse", "keyboard", "gaming headset", "PlayStation", "Xbox", "Switch"],
    price: [1900, 69900],
  },
};

const ADJECTIVES = [
  "Pro",
  "Max",
  "Ultra",
  "Lite",
  "Mini",
  "Plus",
  "Air",
  "Classic",
  "Sport",
  "Studio",
  "Compact",
  "Wireless",
  "Smart",
  "Premium",
  "Essential",
  "Deluxe",
];
const COLORS = ["Black", "White", "Silver", "Blue", "Red", "Green", "Graphite", "Gold", "Pink", "Grey"];
const MATERIALS = ["aluminium", "steel", "leather", "cotton", "oak", "recycled plastic", "glass", "titanium"];
const FEATURES = [
  "long battery life",
  "fast charging",
  "noise cancelling",
  "water resistant",
  "lightweight",
  "energy efficient",
  "two year warranty",
  "eco friendly",
  "quiet",
  "durable",
  "ergonomic",
  "high resolution",
];

export function syntheticProducts(n: number, seed = 42): CatalogProduct[] {
  const r = rng(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(r() * a.length)];
  const categories = Object.keys(CATALOG);
  const t0 = Date.UTC(2024, 0, 1);
  const out = new Array<CatalogProduct>(n);
  for (let i = 0; i < n; i++) {
    const category = pick(categories);
    const c = CATALOG[category];
    const brand = pick(c.brands);
    const noun = pick(c.nouns);
    const adj = pick(ADJECTIVES);
    const color = pick(COLORS);
    const model = 1 + Math.floor(r() * 30);
    const name = `${brand} ${noun} ${adj} ${model} ${color}`;
    const f1 = pick(FEATURES);
    const f2 = pick(FEATURES);
    const material = pick(MATERIALS);
    const [lo, hi] = c.price;
    const amount = Math.round((lo + r() * (hi - lo)) / 100) * 100 - 1;
    const onHand = r() < 0.15 ? 0 : Math.floor(r() * 200);
    const reserved = Math.min(onHand, Math.floor(r() * 5));
    const created = new Date(t0 + Math.floor(r() * 700 * 86_400_000)).toISOString();
    out[i] = {
      id: `p${String(i).padStart(7, "0")}`,
      sku: `${brand.slice(0, 3).toUpperCase()}-${category.slice(0, 3).toUpperCase()}-${String(i).padStart(6, "0")}`,
      name,
      description: `The ${brand} ${noun} ${adj} ${model} in ${color.toLowerCase()} ${material}: ${f1}, ${f2}. A ${category.toLowerCase()} favourite.`,
      category,
      brand,
      tags: [noun.toLowerCase(), adj.toLowerCase(), color.toLowerCase(), f1.split(" ")[0]],
      price: { amount, currency: "EUR" },
      images: [`https://img.example/${i}.jpg`],
      stock: { onHand, reserved, available: onHand - reserved },
      createdAt: created,
      updatedAt: created,
      version: 1,
    };
  }
  return out;
}
