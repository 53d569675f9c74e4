// Page strings in English and Simplified Chinese; the choice is kept in localStorage.
//
// Static text carries `data-i18n="key"` (and `data-i18n-attr="attr:key;..."`); code calls
// `t(key, values)`, where `{name}` in a string is replaced by `values.name`.

const KEY = "stylerelay.lang";

const STRINGS = {
  en: {
    "title": "Stylerelay — turn a photo into a painting",
    "skip": "Skip to the form",
    "nav.label": "Sections",
    "nav.create": "Create",
    "nav.results": "My results",
    "lang.label": "Language",
    "nodes.none": "No node online — jobs will wait",
    "nodes.some": "{n} node online|{n} nodes online",
    "nodes.unknown": "Checking nodes…",
    "hero.title": "Turn your photo into a painting",
    "hero.lead": "Pick a style, add a photo, and watch it being painted — in seconds with a fast style, or in a few minutes for the finest detail.",
    "load.failed": "The relay could not be reached ({why}). Check your connection and reload the page.",

    "style.title": "Choose a style",
    "style.blend": "Blend several styles",
    "style.hint": "Click a picture to choose it.",
    "style.hint.blend": "Choose up to {n} styles of one kind, then set how much of each to use.",
    "style.weights": "Blend weights",
    "style.none": "Choose a style first: click one of the pictures, or upload your own style image.",
    "style.group.painting": "Paintings",
    "style.group.painting.note": "Best with the quality method",
    "style.group.fast": "Fast styles",
    "style.group.fast.note": "Ready in seconds",
    "style.group.upload": "Your own style",
    "style.group.upload.note": "Any picture can be a style",
    "style.group.fast.empty": "No fast styles right now: they appear when a node that has them is online.",
    "style.upload": "Upload a style image",
    "style.all": "Show all {n} fast styles",
    "style.fewer": "Show fewer",
    "style.upload.more": "Add another",
    "style.remove": "Remove {name}",
    "style.by": "{artist}, {year}",
    "style.own": "Your style {n}",
    "style.kind.mixed": "Blends use one kind of style; your earlier choice was cleared.",
    "style.max": "At most {n} styles can be blended.",
    "style.weight.label": "Weight of {name}",

    "photo.title": "Add your photo",
    "photo.drop": "Drop a photo here, or",
    "photo.choose": "Choose a photo",
    "photo.change": "Choose another",
    "photo.veil": "Drop the photo to use it",
    "photo.limits": "PNG, JPEG or WebP, up to {mb} and {mp} megapixels.",
    "photo.none": "Add a photo: drop it here or choose a file.",
    "photo.type": "“{name}” is not a PNG, JPEG or WebP image.",
    "photo.big": "“{name}” is {size}; the limit is {mb}.",
    "photo.pixels": "“{name}” has {mp} megapixels; the limit is {max} megapixels.",
    "photo.broken": "“{name}” could not be read as an image.",
    "photo.alt": "Your photo: {name}",
    "photo.dims": "{w} × {h} px · {size}",

    "method.title": "How should it be painted?",
    "method.legend": "Method",
    "method.fast": "Fast",
    "method.fast.note": "One pass through a trained network. Ready in seconds.",
    "method.gatys": "Quality",
    "method.gatys.note": "Paints the picture step by step for the finest detail. Takes minutes.",
    "method.arbitrary": "Any image",
    "method.arbitrary.note": "Uses any painting or your own image as the style, in one pass.",
    "method.needs.fast": "Choose a fast style to use this.",
    "method.needs.image": "Choose a painting or your own style image to use this.",
    "method.offline": "No node offers this right now; your job will wait for one.",
    "method.eta": "about {time}",

    "param.epochs": "Epochs",
    "param.epochs.hint": "More epochs, more detail. This relay allows up to {max}.",
    "param.epochs.only": "Only the quality method uses epochs.",
    "param.size": "Output size (long side)",
    "param.strength": "Style strength",
    "param.keep": "Keep the photo's original colours",
    "adv.title": "Advanced settings",
    "adv.hint": "Leave a box empty to use the node's default.",
    "adv.content": "Content weight",
    "adv.style": "Style weight",
    "adv.tv": "Smoothness (TV weight)",
    "adv.optimizer": "Optimiser",
    "adv.default": "Default",
    "adv.lr": "Learning rate",
    "adv.seed": "Random seed",
    "adv.bad": "“{field}” must be a number of zero or more.",
    "adv.seed.bad": "“Random seed” must be a whole number of zero or more.",

    "submit": "Paint it",
    "submit.busy": "Sending…",
    "estimate": "Estimated time: {time}",
    "estimate.measured": "Estimated time: {time} (from jobs you ran here)",
    "estimate.wait": "No node is online: the job will wait in the queue.",

    "job.title": "Your painting",
    "job.photo": "Photo",
    "job.style": "Style",
    "job.result": "Result",
    "job.preview": "Live preview",
    "job.download": "Download PNG",
    "job.cancel": "Cancel",
    "job.new": "Paint another",
    "job.link": "Link to this job",
    "job.copy": "Copy",
    "job.copied": "Copied",
    "job.state.queued": "Queued",
    "job.state.running": "Painting",
    "job.state.done": "Done",
    "job.state.failed": "Failed",
    "job.state.cancelled": "Cancelled",
    "job.queued": "Waiting in line: position {n}.",
    "job.queued.none": "No node online, your job will wait. Position in the queue: {n}.",
    "job.queued.why": "Waiting in line: position {n}. {why}",
    "job.requeued": "The node was lost; the job is back in the queue (attempt {n}).",
    "job.started": "A node took your job ({node}). Starting…",
    "job.running": "Painting on {node}…",
    "job.progress": "Epoch {epoch} of {max} · {pct}%",
    "job.left": "about {time} left",
    "job.announce": "{pct}% painted",
    "job.done": "Finished. Your painting is ready.",
    "job.failed": "The job failed: {why}",
    "job.cancelled": "The job was cancelled.",
    "job.cancel.failed": "Could not cancel: {why}",
    "job.gone": "This job is not on the relay any more: its id is wrong, or it expired.",
    "job.reconnecting": "Connection lost. Reconnecting in {s} s…",
    "job.reconnected": "Connected again.",
    "job.offline": "You are offline. The page reconnects when the network is back.",
    "job.alt.content": "The photo of this job",
    "job.alt.style": "Style: {name}",
    "job.alt.result": "The finished painting",
    "job.alt.preview": "Live preview of the painting",

    "results.title": "My results",
    "results.hint": "Jobs from this browser. Results are kept on the relay for a limited time.",
    "results.empty": "Nothing yet — your paintings will appear here.",
    "results.open": "Open",
    "results.forget": "Remove from this list",
    "results.alt": "Result of a job from {date}",
    "results.alt.content": "Photo of a job from {date}",
    "results.alt.style": "Its style",

    "err.server": "The relay refused the request: {why}",
    "err.network": "The relay could not be reached. Check your connection and try again.",
    "err.status": "The relay answered with an error ({status}).",

    "time.s": "{n} s",
    "time.min": "{n} min",
    "time.h": "{n} h {m} min",
    "size.mb": "{n} MB",
    "size.kb": "{n} KB",

    "foot.text": "Stylerelay — neural style transfer on volunteer GPUs.",
    "foot.api": "API",
  },
  "zh-CN": {
    "title": "Stylerelay — 把照片变成一幅画",
    "skip": "跳到表单",
    "nav.label": "页面导航",
    "nav.create": "创作",
    "nav.results": "我的作品",
    "lang.label": "语言",
    "nodes.none": "暂无在线节点，任务将排队等候",
    "nodes.some": "{n} 个节点在线",
    "nodes.unknown": "正在查看节点…",
    "hero.title": "把你的照片变成一幅画",
    "hero.lead": "选一种风格，添加一张照片，看着它被一笔笔画出来。快速风格几秒即成，精细模式几分钟就能呈现更丰富的细节。",
    "load.failed": "无法连接到中继服务器（{why}）。请检查网络后刷新页面。",

    "style.title": "选择风格",
    "style.blend": "混合多种风格",
    "style.hint": "点击一幅图片即可选中。",
    "style.hint.blend": "最多可选 {n} 种同类风格，再分别设置各自的比重。",
    "style.weights": "混合比重",
    "style.none": "请先选择风格：点击一幅图片，或上传你自己的风格图片。",
    "style.group.painting": "名画",
    "style.group.painting.note": "配合精细模式效果最佳",
    "style.group.fast": "快速风格",
    "style.group.fast.note": "几秒即可完成",
    "style.group.upload": "自定义风格",
    "style.group.upload.note": "任何图片都能作为风格",
    "style.group.fast.empty": "暂无快速风格：有节点提供时会显示在这里。",
    "style.upload": "上传风格图片",
    "style.all": "显示全部 {n} 种快速风格",
    "style.fewer": "收起",
    "style.upload.more": "再添加一张",
    "style.remove": "移除{name}",
    "style.by": "{artist}，{year}",
    "style.own": "自定义风格 {n}",
    "style.kind.mixed": "混合时只能使用同一类风格，之前的选择已清除。",
    "style.max": "最多只能混合 {n} 种风格。",
    "style.weight.label": "{name}的比重",

    "photo.title": "添加照片",
    "photo.drop": "把照片拖到这里，或者",
    "photo.choose": "选择照片",
    "photo.change": "换一张",
    "photo.veil": "松开鼠标即可使用这张照片",
    "photo.limits": "支持 PNG、JPEG、WebP，文件不超过 {mb}，像素不超过 {mp} 百万。",
    "photo.none": "请添加照片：拖到此处或选择文件。",
    "photo.type": "“{name}”不是 PNG、JPEG 或 WebP 图片。",
    "photo.big": "“{name}”大小为 {size}，超过了 {mb} 的上限。",
    "photo.pixels": "“{name}”有 {mp} 百万像素，超过了 {max} 百万像素的上限。",
    "photo.broken": "无法将“{name}”识别为图片。",
    "photo.alt": "你的照片：{name}",
    "photo.dims": "{w} × {h} 像素 · {size}",

    "method.title": "用哪种方式来画？",
    "method.legend": "方式",
    "method.fast": "快速",
    "method.fast.note": "用训练好的网络一次生成，几秒即可完成。",
    "method.gatys": "精细",
    "method.gatys.note": "逐步优化画面，细节最丰富，需要几分钟。",
    "method.arbitrary": "任意图片",
    "method.arbitrary.note": "用任意名画或你自己的图片作为风格，一次生成。",
    "method.needs.fast": "选择一种快速风格后即可使用。",
    "method.needs.image": "选择一幅名画或上传风格图片后即可使用。",
    "method.offline": "目前没有节点提供这种方式，任务会排队等候。",
    "method.eta": "约 {time}",

    "param.epochs": "迭代轮数",
    "param.epochs.hint": "轮数越多，细节越丰富。本服务器最多允许 {max} 轮。",
    "param.epochs.only": "只有精细模式会用到迭代轮数。",
    "param.size": "输出尺寸（长边）",
    "param.strength": "风格强度",
    "param.keep": "保留照片原本的色彩",
    "adv.title": "高级设置",
    "adv.hint": "留空则使用节点的默认值。",
    "adv.content": "内容权重",
    "adv.style": "风格权重",
    "adv.tv": "平滑度（TV 权重）",
    "adv.optimizer": "优化器",
    "adv.default": "默认",
    "adv.lr": "学习率",
    "adv.seed": "随机种子",
    "adv.bad": "“{field}”必须是大于或等于零的数字。",
    "adv.seed.bad": "“随机种子”必须是大于或等于零的整数。",

    "submit": "开始绘制",
    "submit.busy": "正在提交…",
    "estimate": "预计用时：{time}",
    "estimate.measured": "预计用时：{time}（根据你在这里运行过的任务估算）",
    "estimate.wait": "暂无在线节点：任务会在队列中等候。",

    "job.title": "你的画作",
    "job.photo": "照片",
    "job.style": "风格",
    "job.result": "成品",
    "job.preview": "实时预览",
    "job.download": "下载 PNG",
    "job.cancel": "取消",
    "job.new": "再画一张",
    "job.link": "本任务的链接",
    "job.copy": "复制",
    "job.copied": "已复制",
    "job.state.queued": "排队中",
    "job.state.running": "绘制中",
    "job.state.done": "已完成",
    "job.state.failed": "失败",
    "job.state.cancelled": "已取消",
    "job.queued": "正在排队：第 {n} 位。",
    "job.queued.none": "暂无在线节点，你的任务将排队等候。当前排在第 {n} 位。",
    "job.queued.why": "正在排队：第 {n} 位。{why}",
    "job.requeued": "节点已断开，任务重新回到队列（第 {n} 次尝试）。",
    "job.started": "节点 {node} 已接手你的任务，即将开始…",
    "job.running": "{node} 正在绘制…",
    "job.progress": "第 {epoch} / {max} 轮 · {pct}%",
    "job.left": "约剩 {time}",
    "job.announce": "已完成 {pct}%",
    "job.done": "完成了！你的画作已经准备好。",
    "job.failed": "任务失败：{why}",
    "job.cancelled": "任务已取消。",
    "job.cancel.failed": "无法取消：{why}",
    "job.gone": "中继服务器上已没有这个任务：链接有误，或者结果已过期。",
    "job.reconnecting": "连接已断开，{s} 秒后重新连接…",
    "job.reconnected": "已重新连接。",
    "job.offline": "你已离线。网络恢复后页面会自动重新连接。",
    "job.alt.content": "本任务的照片",
    "job.alt.style": "风格：{name}",
    "job.alt.result": "完成的画作",
    "job.alt.preview": "画作的实时预览",

    "results.title": "我的作品",
    "results.hint": "在此浏览器中提交过的任务。结果只在服务器上保留一段时间。",
    "results.empty": "还没有作品，完成的画作会显示在这里。",
    "results.open": "打开",
    "results.forget": "从列表中移除",
    "results.alt": "{date} 的任务结果",
    "results.alt.content": "{date} 的任务照片",
    "results.alt.style": "所用风格",

    "err.server": "中继服务器拒绝了请求：{why}",
    "err.network": "无法连接到中继服务器，请检查网络后重试。",
    "err.status": "中继服务器返回了错误（{status}）。",

    "time.s": "{n} 秒",
    "time.min": "{n} 分钟",
    "time.h": "{n} 小时 {m} 分钟",
    "size.mb": "{n} MB",
    "size.kb": "{n} KB",

    "foot.text": "Stylerelay — 由志愿者 GPU 驱动的神经风格迁移。",
    "foot.api": "API 文档",
  },
};

// Messages the relay sends in English that the page knows how to say in Chinese.
const SERVER_ZH = [
  [/^No node is online; the job starts when one connects\.$/, "暂无在线节点，有节点连接后任务就会开始。"],
  [/^No connected node offers the (\w+) method\.$/, "已连接的节点都不提供 $1 方式。"],
  [/^Cancelled by request\.$/, "已按请求取消。"],
];

// Chinese names of the gallery paintings, their painters, and the nodes' built-in fast
// styles (keyed by slug and by English name, lower case with dashes).
const NAMES_ZH = {
  "painting:starry_night": "星月夜",
  "painting:the_scream": "呐喊",
  "painting:woman_with_a_hat": "戴帽子的女人",
  "painting:great_wave": "神奈川冲浪里",
  "painting:udnie": "乌德尼",
  "Vincent van Gogh": "文森特·梵高",
  "Edvard Munch": "爱德华·蒙克",
  "Henri Matisse": "亨利·马蒂斯",
  "Katsushika Hokusai": "葛饰北斋",
  "Francis Picabia": "弗朗西斯·毕卡比亚",
};
const FAST_ZH = [
  ["ochre-sky", "ochre-and-sky", "赭石与天空"],
  ["yellow-ink", "yellow-and-ink", "明黄与墨"],
  ["charcoal-outline", "charcoal-outline", "炭笔勾勒"],
  ["carnival-swirls", "carnival-swirls", "狂欢漩涡"],
  ["crimson-gold", "crimson-and-gold", "绯红与金"],
  ["fiery-brushwork", "fiery-brushwork", "烈焰笔触"],
  ["indigo-spots", "indigo-spots", "靛蓝斑点"],
  ["cobalt-flame", "cobalt-and-flame", "钴蓝与火焰"],
  ["pastel-lines", "pastel-line-art", "粉彩线描"],
  ["teal-leaf-print", "teal-leaf-print", "青绿叶印"],
  ["sepia-oil", "sepia-oil", "棕褐油画"],
  ["ink-on-ochre", "ink-on-ochre", "赭底墨韵"],
  ["lilac-haze", "lilac-haze", "丁香薄雾"],
  ["green-cubist", "green-cubist", "绿色立体派"],
  ["frosted-aqua", "frosted-aqua", "霜染水蓝"],
  ["stained-glass", "stained-glass", "彩绘玻璃"],
  ["blue-hatching", "blue-hatching", "蓝色排线"],
  ["woven-blocks", "woven-blocks", "编织色块"],
  ["sand-umber", "sand-and-umber", "沙色与赭褐"],
  ["starry-blue", "starry-blue", "星空蓝"],
  ["red-fauve", "red-fauve", "红色野兽派"],
  ["pink-cutout", "pink-cutout", "粉色剪纸"],
  ["slate-outline", "slate-outline", "石板灰勾勒"],
  ["smoky-grey", "smoky-grey", "烟灰"],
  ["blue-woodcut", "blue-woodcut", "蓝色木刻"],
  ["tapestry-strokes", "tapestry-strokes", "挂毯笔触"],
  ["candy", "candy", "糖果"],
  ["mosaic", "mosaic", "马赛克"],
];
for (const [slug, english, zh] of FAST_ZH) NAMES_ZH[slug] = NAMES_ZH[english] = zh;

function slugOf(text) {
  return String(text).toLowerCase().replace(/^[a-z]+:/, "").replace(/[\s_]+/g, "-");
}

/** A style's name in the current language (`id` as in /api/styles, `name` its English one). */
export function styleName(id, name) {
  if (current === "en") return name;
  return NAMES_ZH[id] || NAMES_ZH[slugOf(id)] || NAMES_ZH[slugOf(name)] || name;
}

/** A painter's name (and a year like "c. 1831") in the current language. */
export function credit(artist, year) {
  if (current === "en") return t("style.by", { artist, year });
  return t("style.by", { artist: NAMES_ZH[artist] || artist, year: String(year).replace(/^c\. ?/, "约 ") });
}

export const LANGS = Object.keys(STRINGS);
let current = "en";

/** The language chosen before, else the browser's, else English. */
export function initialLang() {
  const saved = localStorage.getItem(KEY);
  if (saved && saved in STRINGS) return saved;
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh-CN" : "en";
}

export function lang() {
  return current;
}

/** The string for `key` with `{name}` placeholders filled; `a|b` picks by `values.n`. */
export function t(key, values = {}) {
  let text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  if (text.includes("|")) {
    const [one, many] = text.split("|");
    text = values.n === 1 ? one : many;
  }
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in values ? String(values[name]) : m));
}

/** A relay message, in Chinese where the page knows it. */
export function server(text) {
  if (!text || current === "en") return text || "";
  for (const [pattern, zh] of SERVER_ZH) {
    if (pattern.test(text)) return text.replace(pattern, zh);
  }
  return text;
}

/** Switch the language, remember it, and rewrite every marked element. */
export function setLang(code, root = document) {
  current = code in STRINGS ? code : "en";
  localStorage.setItem(KEY, current);
  document.documentElement.lang = current;
  document.title = t("title");
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":");
      el.setAttribute(attr, t(key));
    }
  }
}

/** A duration in words: 8 s, 3 min, 1 h 20 min. */
export function duration(seconds) {
  const s = Math.max(1, Math.round(seconds));
  if (s < 90) return t("time.s", { n: s });
  const min = Math.round(s / 60);
  if (min < 90) return t("time.min", { n: min });
  return t("time.h", { n: Math.floor(min / 60), m: min % 60 });
}

/** A byte count in words: 10 MB, 340 KB. */
export function bytes(n) {
  if (n >= 1024 * 1024) {
    const mb = n / (1024 * 1024);
    return t("size.mb", { n: mb >= 10 ? Math.round(mb) : mb.toFixed(1).replace(/\.0$/, "") });
  }
  return t("size.kb", { n: Math.max(1, Math.round(n / 1024)) });
}
