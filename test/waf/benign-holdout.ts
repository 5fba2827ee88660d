/**
 * A HELD-OUT benign corpus: realistic API traffic the WAF's rules were never tuned on. It uses the
 * generators of test/waf/benign-corpus.ts (plus a few more) with a second seed range and locales
 * that corpus does not use, and its own hand-written hard cases. Read by scripts/waf-blind.ts,
 * which reports its false positives apart from the tuning corpus; a rule must not be shaped to
 * let one of these through (fix the rule's idea, or accept the false positive and say so).
 */
import {
  ar,
  cs_CZ,
  da,
  de_AT,
  de_CH,
  el,
  en_AU,
  en_CA,
  en_IN,
  en_US,
  es_MX,
  type Faker,
  fi,
  fr_BE,
  fr_CA,
  he,
  hr,
  hu,
  id_ID,
  ko,
  type LocaleDefinition,
  nb_NO,
  nl_BE,
  pt_PT,
  ro,
  sk,
  uk,
  vi,
  zh_TW,
} from '@faker-js/faker';
import { type BenignRequest, shapes, valuesOf } from './benign-corpus.ts';

/** The second seed range: far from BENIGN_SEED (20_260_107 + n) so no locale shares a stream. */
export const HOLDOUT_SEED = 77_310_000;
const VALUES_PER_LOCALE = 80;

const LOCALES: Array<[string, LocaleDefinition]> = [
  ['en_US', en_US],
  ['en_AU', en_AU],
  ['en_CA', en_CA],
  ['en_IN', en_IN],
  ['de_AT', de_AT],
  ['de_CH', de_CH],
  ['fr_CA', fr_CA],
  ['fr_BE', fr_BE],
  ['es_MX', es_MX],
  ['pt_PT', pt_PT],
  ['nl_BE', nl_BE],
  ['da', da],
  ['nb_NO', nb_NO],
  ['fi', fi],
  ['cs_CZ', cs_CZ],
  ['sk', sk],
  ['hu', hu],
  ['ro', ro],
  ['hr', hr],
  ['uk', uk],
  ['el', el],
  ['he', he],
  ['ar', ar],
  ['ko', ko],
  ['zh_TW', zh_TW],
  ['vi', vi],
  ['id_ID', id_ID],
];

/** Generators the tuning corpus does not have. */
function extra(f: Faker): Array<[string, () => string]> {
  return [
    ['git.commitMessage', () => f.git.commitMessage()],
    ['internet.displayName', () => f.internet.displayName()],
    ['system.directoryPath', () => f.system.directoryPath()],
    ['lorem.lines', () => f.lorem.lines({ min: 2, max: 4 })],
    ['company.buzzNoun', () => `${f.company.buzzAdjective()} ${f.company.buzzNoun()}`],
    ['location.full', () => `${f.location.buildingNumber()} ${f.location.street()}, ${f.location.zipCode()}`],
    ['airline.airport', () => `${f.airline.airport().name} (${f.airline.airport().iataCode})`],
    [
      'science.unit',
      () => `${f.number.float({ min: 0, max: 100, fractionDigits: 2 })} ${f.science.unit().symbol}`,
    ],
    ['internet.urlWithQuery', () => `${f.internet.url()}/?q=${encodeURIComponent(f.word.words(2))}&page=2`],
    ['commerce.isbn', () => f.commerce.isbn()],
    ['finance.transactionDescription', () => f.finance.transactionDescription()],
    ['person.fullName+title', () => `${f.person.prefix()} ${f.person.fullName()}, ${f.person.jobTitle()}`],
  ];
}

/**
 * Hand-written hard cases, none of them in benign-corpus.ts: support tickets, reviews, search
 * queries, addresses and notes that use SQL and shell words next to quotes, separators, paths and
 * markup-like characters, as customers and API clients do.
 */
export const HOLDOUT_HARD_CASES: readonly string[] = [
  "Mary-Kate O'Sullivan",
  "Ngā mihi, D'Arcy",
  "L'Oréal Paris, 14 rue Royale",
  "Jean-Luc D'Souza; Pierre L'Enfant",
  "it's the union of two sets, isn't it?",
  "Can't select more than 3 items -- is that a bug?",
  'Please update the address to: 5 Union Sq., Apt. 3; thanks',
  "We'd like to order 12 (twelve) chairs; delivery by Monday or Tuesday",
  'Where do I find the "delete account" button?',
  'Selected: red, blue & green (3 of 5)',
  'Order #4521 -- drop-off at reception, or leave with security',
  "My son's school: St. Mary's, 1 Church Rd",
  'Is 1 = 1.0 in your price comparison?',
  'if price > 100 and stock < 5 then reorder',
  'rating >= 4 AND price <= 50',
  '3 < 5, 7 > 2 and 4 = 4',
  "Title: 'Drop Dead Gorgeous' (1999)",
  "Band: Drop Kick Murphy's; album 'Sing Loud'",
  'Insert tab A into slot B, then tighten',
  'Where there is a will, there is a way',
  'Join the waitlist; we will email you',
  'Select the 2nd option from the drop-down',
  'Union Jack tote bag (navy/red/white)',
  'Exec summary: revenue up 5%; costs down 2%',
  'Sleep tracker ring, size 9',
  'Cat litter, 10 kg -- unscented',
  'Kill switch for the lawn mower',
  'The "Find" feature does not work on Safari',
  'Ping pong table, foldable',
  'Wget and curl are both installed on my laptop, the app still fails',
  'I ran `npm ci` and then `npm test`, both pass',
  'Path: C:\\Program Files\\MyApp\\config.ini',
  'Saved to ~/Downloads/receipt (1).pdf',
  'Folder: /Users/ann/Desktop/Invoices 2024',
  '../images/logo.png is missing on the product page',
  'See docs at https://docs.example.org/v2/orders?expand=items&limit=50',
  'Callback: https://shop.example.net/return?status=ok&order=981',
  '<3 <3 <3 best gift ever',
  'Use <strong> for bold text in the description',
  'a <b> tag is not allowed here?',
  "Hi! I'm <Ann>, write back please",
  '5 stars!!! (would give 6 if I could) :-)',
  "Question: what's 10% of 250?",
  'Temperature range: -20 °C to +40 °C',
  'Size chart: S (36-38), M (40-42), L (44-46)',
  'Item 1; Item 2; Item 3',
  'Monday | Wednesday | Friday',
  'Tom & Jerry & Friends (DVD box)',
  'Fast & Furious: Hobbs & Shaw',
  'M&M\'s "Peanut" 400 g',
  'H&M gift card, €50',
  'B&Q; IKEA; Homebase',
  'C# and F# for .NET developers',
  'C++ Primer (5th ed.)',
  'Mac & Cheese -- family size',
  'I want to cancel; or can I pause the subscription instead?',
  "Don't ship before the 5th; I'm away",
  'Ship to: "The Old Mill", Mill Lane, Bath',
  "Delivery note: gate code is 1234#, then ring 'Smith'",
  'Password reset link not working (tried 3 times)',
  'Error 500 when I click "Submit order"',
  'The table of contents is wrong in chapter 3',
  'Group by colour, then order by price, please',
  'Order by date: newest first',
  'Count me in for the Friday session!',
  'Sum of all invoices for Q1 2024?',
  "Let's meet at 10:00; or 11:00 if that's easier",
  'From 9 to 5, Mon-Fri (except holidays)',
  'Set-top box remote, model RC-1000/2',
  "Rock 'n' Roll High School (soundtrack)",
  'Ann & Bob\'s wedding list -- "the blue one"',
  'Re: Re: Fwd: your order #981 (shipped)',
  "email: j.o'neil+shop@example.co.uk",
  'tel: +1 (555) 010-9999 ext. 12',
  'Note: cc me on all emails; bcc accounting',
  'Allergies: nuts; dairy (mild)',
  'Bring ID or passport -- no exceptions',
  'Script supervisor wanted for a short film',
  'Shell necklace, handmade in Bali',
  'Java coffee beans, 1 kg, dark roast',
  'Python snake plush toy, 1 m',
  'System of a Down -- Toxicity (vinyl)',
  'The Document Foundation donation receipt',
  'Window seat please, row 12 if possible',
  'Alert me when it is back in stock',
  'Prompt delivery, well packed, thanks',
  'Confirm my booking for 2 adults + 1 child',
  'The word "eval" means evaluation in our HR form',
  'Dear support, the export to CSV (comma-separated) cuts off at 1,000 rows',
  "I typed O'Brien and the form said 'invalid name'",
  'Why does my name "Null" break your form?',
  'Mr. True and Ms. False are both on the guest list',
  'Who is the admin of our team account?',
  'Root beer float recipe, 4 servings',
  'etc. etc. -- you get the idea',
  'passwd reminder: see the welcome email',
  'Host: Ann; co-host: Bob',
  '100 % wool; hand wash only; do not tumble dry',
  '24/7 support? or only 9-5?',
  'Rate: 4.5/5 (120 reviews)',
  'Half & half, 1 pint',
  'x = 3, y = 4; so x + y = 7',
  'f(x) = x^2 + 1',
  'Matrix A(2,3) times B(3,2)',
  'WiFi password: "coffee2024" -- please change it',
  'Serial no. SN-00-4451/B (under the battery)',
  '#1 bestseller in "Home & Kitchen"',
  'Sort: A-Z | Z-A | price ↑ | price ↓',
  'Ümlaut test: Müller, Größe, Straße',
  'Ελληνικά: καλημέρα; ευχαριστώ',
  'Пожалуйста, доставьте до 18:00; код домофона 45#',
  '주문 취소 가능한가요? (주문번호 123)',
  '請於週五前送達；謝謝',
  'Cảm ơn! Giao hàng nhanh; đóng gói cẩn thận',
  'תודה רבה; המשלוח הגיע',
  'مرحبا، أين طلبي؟',
];

let cached: BenignRequest[] | undefined;

/** The held-out benign corpus (built once per process). */
export function holdoutBenignCorpus(): BenignRequest[] {
  if (cached) return cached;
  const out: BenignRequest[] = [];
  let i = 0;
  LOCALES.forEach(([name, locale], n) => {
    for (const [gen, value] of valuesOf(locale, HOLDOUT_SEED + 7 * n, VALUES_PER_LOCALE, extra))
      for (const r of shapes(`${name}:${gen}`, value, i++)) out.push(r);
  });
  for (const value of HOLDOUT_HARD_CASES) for (const r of shapes('hard', value, i++)) out.push(r);
  cached = out;
  return out;
}
