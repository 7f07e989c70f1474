"""Echo bot: replies with the same text, and sends back any image or file it receives.

ilinkbot run examples/echo.py --sandbox     # offline, you play the WeChat user
ilinkbot run examples/echo.py               # for real, after `ilinkbot login`
"""

from ilinkbot import Bot, filters

bot = Bot()


@bot.command("help")
async def help_(msg, ctx):
    await msg.reply("I repeat what you write, and send back images and files.")


@bot.message(filters.image | filters.file)
async def media_back(msg, ctx):
    media = await msg.download()
    if media is None:
        await msg.reply("I could not fetch that.")
    elif msg.kind == "image":
        await msg.reply_image(media.data)
    else:
        await msg.reply_file(media.data, file_name=media.file_name)


@bot.message(filters.text)
async def echo(msg, ctx):
    await msg.reply(msg.text)
