//! What a browser does with our pages: GET a page, read its form, POST it.

pub struct Page {
    pub status: u16,
    pub html: String,
}

impl Page {
    /// The `data-page` of the page's main element: which page the gateway chose.
    pub fn kind(&self) -> &str {
        let start = self.html.find("data-page=\"").map(|i| i + "data-page=\"".len()).unwrap_or(0);
        let end = self.html[start..].find('"').map(|i| start + i).unwrap_or(start);
        &self.html[start..end]
    }

    /// The first form: its action and its named input values (hidden or not).
    pub fn form(&self) -> Option<(String, Vec<(String, String)>)> {
        let form_start = self.html.find("<form")?;
        let form_end = form_start + self.html[form_start..].find("</form>")?;
        let form = &self.html[form_start..form_end];
        let action = attribute(form, "action")?;
        let fields = form
            .match_indices("<input")
            .filter_map(|(i, _)| {
                let tag = &form[i..i + form[i..].find('>')?];
                Some((attribute(tag, "name")?, attribute(tag, "value").unwrap_or_default()))
            })
            .collect();
        Some((action, fields))
    }
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(unescape(&tag[start..end]))
}

fn unescape(value: &str) -> String {
    value
        .replace("&#x2f;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

pub struct Browser {
    client: reqwest::Client,
    base: String,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        let client =
            reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().expect("http client");
        Browser { client, base: base.trim_end_matches('/').to_owned() }
    }

    pub async fn get(&self, url: &str) -> Page {
        let response = self.client.get(url).send().await.expect("GET");
        Page { status: response.status().as_u16(), html: response.text().await.expect("body") }
    }

    /// Submits a form as a browser would: urlencoded fields to its action.
    pub async fn submit(&self, action: &str, fields: &[(String, String)]) -> Page {
        let url = if action.starts_with('/') { format!("{}{action}", self.base) } else { action.to_owned() };
        let response = self.client.post(url).form(fields).send().await.expect("POST");
        Page { status: response.status().as_u16(), html: response.text().await.expect("body") }
    }

    /// Opens a link and submits the form on the page it shows (the "click").
    pub async fn click(&self, link: &str) -> Page {
        let page = self.get(link).await;
        let (action, fields) = page.form().unwrap_or_else(|| panic!("no form on {link}:\n{}", page.html));
        self.submit(&action, &fields).await
    }
}
