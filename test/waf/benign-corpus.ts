/**
 * The WAF's benign corpus: realistic API traffic, generated reproducibly with @faker-js/faker
 * (fixed seed, several locales) plus hand-written hard cases. Every value is sent the ways an API
 * receives it: as a query value, a JSON field, a form field and a header. A request the WAF
 * blocks here is a false positive.
 *
 * Used by test/waf/benign.test.ts (false-positive rate per paranoia level, with a threshold) and
 * by scripts/waf-corpus.ts (the report).
 */
import {
  de,
  en,
  en_GB,
  en_IE,
  es,
  Faker,
  fr,
  it,
  ja,
  type LocaleDefinition,
  nl,
  pl,
  pt_BR,
  ru,
  sv,
  tr,
  zh_CN,
} from '@faker-js/faker';
import type { RequestParts } from '../../src/policies/waf/types.ts';

/** Fixed seed: the corpus is the same on every run and machine. */
export const BENIGN_SEED = 20_260_107;
/** Generated values per locale (each is sent in four request shapes). */
const VALUES_PER_LOCALE = 60;

/**
 * Hand-written hard cases: prose and data with SQL words, quotes, separators, ampersands,
 * parentheses, paths and markup-like characters that real users type.
 */
export const HARD_CASES: readonly string[] = [
  "O'Brien",
  "Seán O'Brien-Smith",
  "D'Angelo",
  "Ann O'Neil, 12 O'Connell St.",
  'Tom & Jerry',
  'Tom & Jerry; Laurel & Hardy',
  '1=1 is true',
  'select a size',
  'Please select a size and a colour',
  'Select all that apply',
  `Ann's note; please select "gift wrap" or leave it`,
  "I'd like to update my order, or cancel it if it's too late",
  'Drop the package at the back door, or leave it with the neighbour',
  "Delete my account and all data, please; I don't use it anymore",
  'Union Street 5, San Francisco',
  'union station',
  'Order by Friday or we ship Monday',
  "Where's my order? It's been 5 days",
  'Insert coin and select drink',
  'The table is 2 m long and 1 m wide',
  'Join us for dinner at 7 (bring a friend)',
  'Where id = my customer number?',
  "It's 50% off -- today only!",
  'Rock & Roll Hall of Fame',
  'AT&T',
  'Procter & Gamble',
  'Ben & Jerry\'s "Cookie Dough" (500 ml)',
  'size: 10 1/2',
  'Price < 100 and rating > 4',
  'a < b',
  '5 > 3 and 2 < 4',
  'Cats & dogs <3',
  'email me at ann@example.com or call +44 (0)20 7946 0958',
  '(555) 123-4567',
  '#hashtag @mention',
  'C:\\Users\\ann\\Documents\\report.docx',
  'My folder is /home/ann/photos/2023',
  'Documents/Invoices/2024/invoice-0042.pdf',
  'report_final (2).xlsx',
  'IMG_2041.JPG',
  'backup of my notes.txt',
  'Use the "Sort by: price" option',
  "He said 'hello' and left",
  'She wrote: "Don\'t forget the milk"',
  'Rated 5/5 -- would buy again!',
  'Meeting @ 10:30; room #4 (2nd floor)',
  'Q&A session: What is 2+2? 4!',
  'Terms & Conditions apply*',
  'Size S/M/L/XL',
  'Not sure if this works || maybe not',
  'See https://example.com/help?topic=returns&lang=en',
  'Version 2.3.1 (build 4512)',
  'ls and cat are my two cats',
  'cat food, 2 bags',
  'Set of 6 glasses',
  'time to ship: 2-3 days',
  'Ping me when it arrives',
  'Find my order',
  'Sleep mask, silk',
  'Echo Dot (4th gen)',
  'Kill Bill Vol. 1',
  'Head & Shoulders shampoo',
  'Tail light for bike',
  'Sort code 20-00-00',
  'Type: hardcover',
  'who are you?',
  'Touch screen broken',
  'nice one!',
  'watch strap, 20 mm',
  'Move to trash',
  'Copy of invoice',
  'python book for beginners',
  'Learning Java & Python (3rd edition)',
  'how to use curl with a proxy',
  'bash scripting cheat sheet',
  'Node.js and Express in action',
  "The 'select' element lists options",
  'SELECT your seat -- then pay',
  "It's O'Reilly's book: 'SQL in a Nutshell'",
  "Rock 'n' roll",
  "The 90's were great",
  'From: Ann; To: Bob; Subject: Re: your order',
  'Add 2 cups flour; mix; bake at 180 °C for 25 min',
  'Fish & chips; mushy peas (optional)',
  'Do you deliver to Orléans, Zürich or Kraków?',
  'Müller & Söhne GmbH',
  'Café "Le Petit" — 3 étoiles',
  'ありがとうございます！',
  '請問何時發貨？',
  'Спасибо, всё отлично!',
  'משלוח מהיר, תודה',
  'شكرا جزيلا',
  'Grüße aus München :-)',
  ':) :( ;-) <3',
  '100% cotton, machine wash 30°',
  'Fits 13" laptops',
  '5\' 11" tall',
  'width=120cm; height=80cm',
  'key=value',
  'a=1&b=2',
  'Dear team, please exec the refund asap',
  'Update: the issue is fixed; please close the ticket',
  'The script ran fine, thanks',
  'Chapter 1: The beginning (and the end)',
  '<3 this product',
  'Best deal ever!!! $$$',
  'Save $20 on orders over $100',
  'Price: $1,299.99',
  'temperature < 5 degrees',
  'Windows 11 Home, 64-bit',
  'MacBook Pro 14" (M3, 2023)',
  'iPhone 15 Pro Max / 256 GB',
  'Java 21 & Spring Boot 3',
  'user-agent string test',
  'ORDER-2024-0001',
  'Drop-off point: Gate 3',
  'Or else what?',
  'and then?',
  'not null',
  "I'm not sure, or am I?",
  "x' is a prime variable",
  "f'(x) = 2x",
  'Let x = 1; y = 2',
  'if (x > 3) then stop',
  "Don't @ me",
  'The Who — Live at Leeds',
  'Echo & the Bunnymen',
  'Guns N\' Roses - "Sweet Child O\' Mine"',
  'Simon & Garfunkel',
  'Profit & loss statement (Q3)',
  'Select Comfort mattress',
  'Table for two at 8pm',
  'Delete',
  'Update',
  'Insert',
  'Drop',
  'Union',
  'Where',
  'exec',
  'system',
  'script',
  'alert',
  'document',
  'window cleaning',
  'Location: Paris',
  'cookie jar',
  'Shell Oil',
  'Admin panel access request',
  'Passwords must be 12 characters',
  '/etc is a folder on Linux',
  "Please wrap it; it is a gift for my mum's 60th",
  'Tea, coffee & cake (from 3 pm)',
  'SQL for beginners: select, insert, update & delete explained',
  'Learn HTML: the <p> and <b> tags',
  'Use <br> for a line break',
  'Math: 3 < 4 > 2',
  'Tic-tac-toe: X|O|X',
  'a | b | c',
  'Yes/No',
  'N/A',
  '-',
  '--',
  '...',
  "''",
  '""',
  '()',
  '[]',
  '{}',
  'Hello, World!',
  'Total: 42 (incl. VAT)',
  'My name is Bobby; I like tables',
  'eat; sleep; repeat',
  'cut & paste',
  'Find & replace',
  'Save & exit',
  'Line one\nfind my order\nthanks',
  'Time: 10 min; set timeout',
  'my .env file is missing',
  'Bring chips & dip',
  'Apples | Oranges | Pears',
  'Use format(A4) please',
  'Count (3)',
  'Just in case (abc)',
  'Format (A4)',
  'Version (2)',
  'Run `npm install` first',
  'online = yes',
  // API values: an avatar as a data: URL, a validation regex, filter and search syntaxes, GraphQL, cron.
  'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==',
  'data:image/jpeg;base64,/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8U',
  '^[a-z0-9_-]{3,16}$',
  '\\d{4}-\\d{2}-\\d{2}',
  "Name eq 'Milk' and Price lt 2.55",
  'status:open AND -label:bug',
  '(cats OR dogs) AND NOT mice',
  'query { user(id: 1) { name email } }',
  '*/5 * * * *',
  'price desc, created_at asc',
  // Near the blind-set rules: code spans and backtick apostrophes, a command quoted in prose, a
  // Python API named without arguments, a Windows variable in a path, SQL words in business text.
  'Set the `system prompt` here, and `print` the result',
  'I don`t know, it`s fine',
  'curl https://api.example.com/v1/items returns 500 for me',
  'How do I use os.system() in Python?',
  'Install to %ProgramFiles%\\Example\\bin',
  'Test case 3 when executed then fails',
  'We need to bulk insert products from the CSV',
  'Thanks --\nJohn',
  '& more',
  'copy file to program folder',
  'fetch https://example.com',
];

/** One corpus entry: a request and what its values came from (for the report). */
export interface BenignRequest {
  source: string;
  shape: 'query' | 'json' | 'form' | 'header';
  parts: RequestParts;
}

const BASE_HEADERS = {
  host: 'api.example.com',
  'user-agent':
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36',
  accept: 'application/json',
};

/** The value generators of one seeded Faker, each named by its faker module and method. */
export function generatorsOf(f: Faker): Array<[string, () => string]> {
  return [
    ['person.fullName', () => f.person.fullName()],
    ['person.lastName', () => f.person.lastName()],
    ['person.jobTitle', () => f.person.jobTitle()],
    ['person.bio', () => f.person.bio()],
    ['location.streetAddress', () => f.location.streetAddress(true)],
    ['location.city', () => `${f.location.city()}, ${f.location.country()}`],
    ['location.secondaryAddress', () => f.location.secondaryAddress()],
    ['commerce.productName', () => f.commerce.productName()],
    ['commerce.productDescription', () => f.commerce.productDescription()],
    ['commerce.department', () => f.commerce.department()],
    ['commerce.price', () => f.commerce.price({ symbol: '$' })],
    ['company.name', () => f.company.name()],
    ['company.catchPhrase', () => f.company.catchPhrase()],
    ['company.buzzPhrase', () => f.company.buzzPhrase()],
    ['hacker.phrase', () => f.hacker.phrase()],
    ['lorem.sentence', () => f.lorem.sentence()],
    ['lorem.paragraph', () => f.lorem.paragraph()],
    ['word.words', () => f.word.words({ count: { min: 1, max: 5 } })],
    ['book.title', () => f.book.title()],
    ['music.songName', () => f.music.songName()],
    ['food.description', () => f.food.description()],
    ['food.dish', () => f.food.dish()],
    [
      'review',
      () =>
        `${f.word.adjective()} ${f.commerce.product()}! ${f.lorem.sentences(2)} ${f.number.int({ min: 1, max: 5 })}/5`,
    ],
    ['system.fileName', () => f.system.fileName()],
    ['system.commonFileName', () => f.system.commonFileName()],
    ['system.filePath', () => f.system.filePath()],
    ['internet.url', () => f.internet.url()],
    ['internet.email', () => f.internet.email()],
    ['internet.userName', () => f.internet.username()],
    ['internet.userAgent', () => f.internet.userAgent()],
    ['internet.ip', () => f.internet.ip()],
    ['phone.number', () => f.phone.number()],
    ['date.recent', () => f.date.recent().toISOString()],
    ['finance.iban', () => f.finance.iban()],
    ['animal.dog', () => f.animal.dog()],
    ['vehicle.vehicle', () => f.vehicle.vehicle()],
    ['color.human', () => `${f.color.human()} & ${f.color.human()}`],
    ['string.uuid', () => f.string.uuid()],
  ];
}

/**
 * `count` values of a locale (default VALUES_PER_LOCALE), seeded once: the same on every run.
 * `extra` generators (test/waf/benign-holdout.ts) are added to the standard ones.
 */
export function valuesOf(
  locale: LocaleDefinition,
  seed: number,
  count = VALUES_PER_LOCALE,
  extra: (f: Faker) => Array<[string, () => string]> = () => [],
): Array<[string, string]> {
  const f = new Faker({ locale: [locale, en] });
  f.seed(seed);
  const gens = [...generatorsOf(f), ...extra(f)];
  const out: Array<[string, string]> = [];
  for (let i = 0; i < count; i++) {
    const [name, gen] = gens[i % gens.length] as [string, () => string];
    try {
      out.push([name, gen()]);
    } catch {
      // A locale without this module's data: faker throws; the English fallback covers most.
    }
  }
  return out;
}

const LOCALES: Array<[string, LocaleDefinition]> = [
  ['en', en],
  ['en_GB', en_GB],
  ['en_IE', en_IE],
  ['de', de],
  ['fr', fr],
  ['es', es],
  ['it', it],
  ['nl', nl],
  ['pl', pl],
  ['pt_BR', pt_BR],
  ['sv', sv],
  ['tr', tr],
  ['ru', ru],
  ['ja', ja],
  ['zh_CN', zh_CN],
];

/** Header names an API client sets with free text. */
const TEXT_HEADERS = ['x-customer-note', 'x-search', 'referer', 'x-display-name'];

/** The four ways an API receives a value: query value, JSON field, form field, header. */
export function shapes(source: string, value: string, i: number): BenignRequest[] {
  const field = ['q', 'name', 'note', 'comment', 'title', 'description', 'address', 'file'][i % 8] as string;
  const json = JSON.stringify({ id: i, [field]: value, tags: ['a', 'b'], active: true });
  const form = `${field}=${encodeURIComponent(value).replace(/%20/g, '+')}&page=1`;
  const header = TEXT_HEADERS[i % TEXT_HEADERS.length] as string;
  return [
    {
      source,
      shape: 'query',
      parts: {
        method: 'GET',
        url: `/search?${field}=${encodeURIComponent(value)}&limit=20`,
        headers: BASE_HEADERS,
      },
    },
    {
      source,
      shape: 'json',
      parts: {
        method: 'POST',
        url: '/items',
        headers: { ...BASE_HEADERS, 'content-type': 'application/json' },
        body: json,
      },
    },
    {
      source,
      shape: 'form',
      parts: {
        method: 'POST',
        url: '/form',
        headers: { ...BASE_HEADERS, 'content-type': 'application/x-www-form-urlencoded' },
        body: form,
      },
    },
    {
      source,
      shape: 'header',
      // Header values are Latin-1 on the wire: non-Latin-1 text is sent percent-encoded, as browsers do.
      parts: {
        method: 'GET',
        url: '/items',
        headers: {
          ...BASE_HEADERS,
          [header]: /^[\x20-\x7e\xa0-\xff]*$/.test(value) ? value : encodeURIComponent(value),
        },
      },
    },
  ];
}

let cached: BenignRequest[] | undefined;

/** The benign corpus (built once per process). */
export function benignCorpus(): BenignRequest[] {
  if (cached) return cached;
  const out: BenignRequest[] = [];
  let i = 0;
  LOCALES.forEach(([name, locale], n) => {
    for (const [gen, value] of valuesOf(locale, BENIGN_SEED + n))
      for (const r of shapes(`${name}:${gen}`, value, i++)) out.push(r);
  });
  for (const value of HARD_CASES) for (const r of shapes('hard', value, i++)) out.push(r);
  cached = out;
  return out;
}
