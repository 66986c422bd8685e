//! The blog example's code for `Post`: hooks that keep titles tidy, and the body of its
//! action `publish`, which changes two models in one transaction.
//!
//! Start a project with it: `lithair-gen new blog --schema examples/blog.yaml --handlers
//! examples/blog`. From then on the file is yours, as any handler file is.

use lithair_runtime::prelude::*;

use crate::generated::author::Author;
use crate::generated::post::*;

/// The handlers of `Post`.
#[derive(Debug, Default)]
pub struct PostHandlers;

impl Hooks<Post> for PostHandlers {
    fn before_create(&self, _ctx: &HookContext, record: &mut Post) -> HookResult {
        record.title = record.title.trim().to_string();
        Ok(())
    }

    fn before_update(&self, _ctx: &HookContext, _old: &Post, new: &mut Post) -> HookResult {
        new.title = new.title.trim().to_string();
        Ok(())
    }
}

impl PostActions for PostHandlers {
    /// `POST /api/posts/{id}/publish`: publishes a draft of the caller's and counts it
    /// in its author's `posts_published`, both or neither.
    async fn publish(&self, ctx: ActionContext, id: Uuid, _body: Value) -> Result<Post, ApiError> {
        let mut post = ctx
            .get::<Post>(id)?
            .ok_or_else(|| ApiError::not_found(format!("no post {id}")))?;
        if post.writer != ctx.principal.name {
            return Err(ApiError::forbidden("only the post's writer publishes it"));
        }
        if post.status == PostStatus::Published {
            return Err(ApiError::conflict(
                "status",
                "the post is published already",
            ));
        }
        let mut author = ctx
            .get::<Author>(post.author)?
            .ok_or_else(|| ApiError::not_found(format!("no author {}", post.author)))?;
        author.posts_published += 1;
        post.status = PostStatus::Published;
        post.published_at = Some(Utc::now());
        ctx.update(&author)?;
        ctx.update(&post)?;
        ctx.commit().await?.get(id)
    }
}
