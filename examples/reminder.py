"""A reminder bot: a daily push at 09:00 Shanghai time, and `/remind` stores a note.

    ilinkbot run examples/reminder.py

The scheduled push goes to the account's owner. Like every push it obeys the reply
window: if the owner has not written in the last 24 hours it is held (not lost) and
goes out when they next write.
"""

from ilinkbot import Bot, filters

bot = Bot()


@bot.schedule("0 9 * * *", tz="Asia/Shanghai")
async def morning(ctx):
    await ctx.send("Good morning! Reply /remind <note> and I will repeat it tomorrow.")


@bot.command("remind")
async def remind(msg, ctx):
    ctx.data["note"] = msg.args
    await msg.reply(f"Noted: {msg.args}" if msg.args else "Usage: /remind <note>")


@bot.message(filters.text)
async def show(msg, ctx):
    note = ctx.data.get("note")
    await msg.reply(f"Your note: {note}" if note else "No note yet. Try /remind buy milk")
